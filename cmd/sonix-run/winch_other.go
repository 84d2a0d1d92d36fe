//go:build !unix

package main

import "os"

func notifyWinch(c chan os.Signal) {}
