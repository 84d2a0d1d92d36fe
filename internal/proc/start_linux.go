package proc

import (
	"os/exec"
	"runtime"
	"syscall"
)

// The kernel sends a child its Pdeathsig when the *thread* that forked it
// exits, not the process (golang/go#27505). So children are forked from
// goroutines locked to threads that live as long as sonix-run: the default
// spawner's, and those of NewSpawner.
var defaultSpawner = NewSpawner(nil)

// A Spawner forks children from one OS thread of its own, which setup
// prepared once (it may put a seccomp filter on the thread: what the
// thread forks inherits it, and nothing else in sonix-run runs under it).
type Spawner struct {
	reqs chan spawn
	err  error
}

type spawn struct {
	cmd  *exec.Cmd
	done chan error
}

// NewSpawner starts the thread and runs setup (nil: none) on it. When setup
// fails, Err says why and Start refuses.
func NewSpawner(setup func() error) *Spawner {
	s := &Spawner{reqs: make(chan spawn)}
	ready := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread must not exit, nor run anything else
		if setup != nil {
			s.err = setup()
		}
		close(ready)
		if s.err != nil {
			return // the thread, in whatever state setup left it, ends with the goroutine
		}
		for r := range s.reqs {
			r.done <- r.cmd.Start()
		}
	}()
	<-ready
	return s
}

// Err is why setup failed; nil when the spawner works.
func (s *Spawner) Err() error { return s.err }

// Start starts cmd as proc.Start does, from s's thread.
func (s *Spawner) Start(cmd *exec.Cmd) error {
	if s.err != nil {
		return s.err
	}
	setSysProcAttr(cmd)
	done := make(chan error)
	s.reqs <- spawn{cmd, done}
	return <-done
}

func setSysProcAttr(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}

func start(cmd *exec.Cmd) error { return defaultSpawner.Start(cmd) }
