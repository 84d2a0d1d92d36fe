// Command mktestsystem builds sonix-run's test system (see package
// testsystem) into a directory and prints the sonix-run command that boots
// it:
//
//	go run ./examples/testsystem/mktestsystem -o DIR [--salt S] [--arch x86_64]
//
// The kernel and busybox come from scripts/install-test-deps.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/sonix-run/sonix-run/examples/testsystem"
)

func main() {
	fs := flag.NewFlagSet("mktestsystem", flag.ContinueOnError)
	out := fs.String("o", "", "directory to build the system in (required)")
	salt := fs.String("salt", "", "mixed into store hashes; empty gives deterministic paths")
	arch := fs.String("arch", "x86_64", "guest architecture")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: mktestsystem -o DIR [--salt S] [--arch x86_64]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *out == "" || fs.NArg() != 0 {
		fs.Usage()
		os.Exit(2)
	}
	in, err := testsystem.FindInputs(*arch)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mktestsystem:", err)
		os.Exit(1)
	}
	sys, err := testsystem.Build(*out, in, testsystem.Options{Salt: *salt})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mktestsystem:", err)
		os.Exit(1)
	}
	fmt.Printf("sonix-run --store %s --modules %s %s\n",
		quote(sys.StoreDir), quote(sys.ModulesDir), quote(sys.Dir+"/result"))
}

// quote quotes s for a POSIX shell when it needs it.
func quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=+:,@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
