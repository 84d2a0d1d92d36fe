package launcher

import (
	"errors"
	"fmt"
	"os"
)

// Reason is why a run did not end with a clean guest poweroff. The command
// maps each to its own exit status.
type Reason int

const (
	BadInput    Reason = iota + 1 // flags, boot.json or a file it names
	Failure                       // QEMU, virtiofsd or sonix-run itself failed
	GuestReset                    // the guest rebooted, which ends the run
	GuestPanic                    // the guest kernel panicked
	Timeout                       // --timeout expired
	Interrupted                   // a signal, or Ctrl-a x
	NoReport                      // the guest ended without reporting the command's status
	BootFailure                   // the guest ended before its agent was ready
	CommandExit                   // the command exited non-zero: Status
)

// Error is a run that did not end with a clean poweroff.
type Error struct {
	Reason Reason
	Signal os.Signal // for Interrupted by a signal
	Status int       // for CommandExit
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func fail(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the Reason of err, Failure for an error that carries none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return Failure
}

// bad makes err a BadInput *Error (config's checks: nothing was started),
// unless it already says why.
func bad(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*Error); ok {
		return err
	}
	return &Error{Reason: BadInput, Err: err}
}
