package launcher

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
)

// cleanups is a run's one cleanup stack: each resource pushes its undo when
// it is created, and run undoes them all, last first, collecting every
// error. Each undo gets a context that bounds how long it may take.
type cleanups struct {
	mu    sync.Mutex
	steps []cleanupStep
	done  bool
}

type cleanupStep struct {
	what string
	undo func(ctx context.Context) error
	max  time.Duration
}

// push registers undo for what, to be run with at most max.
func (c *cleanups) push(what string, max time.Duration, undo func(ctx context.Context) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		panic("cleanup pushed after the run was torn down: " + what)
	}
	c.steps = append(c.steps, cleanupStep{what, undo, max})
}

// run undoes every step, last first; it runs once.
func (c *cleanups) run() error {
	c.mu.Lock()
	steps := c.steps
	c.steps, c.done = nil, true
	c.mu.Unlock()
	var errs *multierror.Error
	for i := len(steps) - 1; i >= 0; i-- {
		s := steps[i]
		ctx, cancel := context.WithTimeout(context.Background(), s.max)
		err := s.undo(ctx)
		cancel()
		if err != nil {
			errs = multierror.Append(errs, fmt.Errorf("%s: %w", s.what, err))
		}
	}
	if errs != nil {
		errs.ErrorFormat = oneLineErrors
	}
	return errs.ErrorOrNil()
}

func oneLineErrors(errs []error) string {
	s := ""
	for i, e := range errs {
		if i > 0 {
			s += "; "
		}
		s += e.Error()
	}
	return s
}
