//go:build linux

package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"golang.org/x/sys/unix"
)

func uname() *unix.Utsname {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return nil
	}
	return &u
}

func kernelRelease() string {
	if u := uname(); u != nil {
		return unix.ByteSliceToString(u.Release[:])
	}
	return ""
}

func unameMachine() string {
	if u := uname(); u != nil {
		return unix.ByteSliceToString(u.Machine[:])
	}
	return ""
}

// canPowerOff says why this agent cannot power the guest off, if it cannot.
func canPowerOff() error {
	if os.Geteuid() != 0 {
		return errors.New("the agent does not run as root")
	}
	return nil
}

// How the guest is powered off.
const (
	viaSystemctl = "systemctl poweroff"
	viaReboot    = "reboot(2)"
)

// powerOffMethod chooses how to power off. Under systemd (and the agent
// not PID 1) systemd is asked, so that services stop in order. Otherwise
// (the agent is PID 1, or a busybox init or stage 2 script is) there is
// nothing to stop in order: sync and reboot(2) directly, which is what
// "poweroff -f" does, without depending on a poweroff program on the PATH.
func powerOffMethod(pid int, systemd bool) string {
	if pid != 1 && systemd {
		return viaSystemctl
	}
	return viaReboot
}

// systemctlWait bounds "systemctl poweroff"; it returns once the shutdown
// job is queued.
const systemctlWait = 30 * time.Second

func powerOff(logf func(string, ...any)) error {
	unix.Sync()
	if powerOffMethod(os.Getpid(), systemdIsInit()) == viaSystemctl {
		ctx, cancel := context.WithTimeout(context.Background(), systemctlWait)
		defer cancel()
		cmd := exec.CommandContext(ctx, "systemctl", "poweroff")
		cmd.Env = []string{"PATH=" + DefaultPath}
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		logf("systemctl poweroff: %v: %s; powering off with reboot(2)", err, out)
	}
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("reboot(2): %w", err)
	}
	return nil
}
