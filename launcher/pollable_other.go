//go:build !linux

package launcher

import "os"

// pollable cannot reopen a descriptor without /proc: reads and writes of
// the user's stdin and stdout then block as they are.
func pollable(f *os.File, flag int) (*os.File, bool) { return nil, false }
