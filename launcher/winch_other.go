//go:build !unix

package launcher

import "os"

func notifyWinch(c chan os.Signal) {}
