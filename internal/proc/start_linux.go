package proc

import (
	"os/exec"
	"runtime"
	"syscall"
)

// The kernel sends a child its Pdeathsig when the *thread* that forked it
// exits, not the process (golang/go#27505). So every child is forked from one
// goroutine locked to a thread that lives as long as sonix-run.
var spawns = make(chan spawn)

type spawn struct {
	cmd  *exec.Cmd
	done chan error
}

func init() {
	go func() {
		runtime.LockOSThread() // never unlocked: the thread must not exit
		for s := range spawns {
			s.done <- s.cmd.Start()
		}
	}()
}

func setSysProcAttr(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}

func start(cmd *exec.Cmd) error {
	done := make(chan error)
	spawns <- spawn{cmd, done}
	return <-done
}
