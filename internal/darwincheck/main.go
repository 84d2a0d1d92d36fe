// Command darwincheck type-checks this module's macOS code from any OS,
// without a C compiler or the macOS SDK: it lists the packages as a darwin
// build with cgo on sees them (go list -deps -json, GOOS=darwin
// CGO_ENABLED=1), then type-checks them with go/types, faking cgo's "C"
// package. The Go side of every cgo file, and every call our darwin files
// make into github.com/Code-Hex/vz/v3, is checked against the real API for
// each architecture (vz declares Rosetta only on arm64).
//
//	go run ./internal/darwincheck [-goarch arm64,amd64] [-overlay FILE] [PATTERN...]
//
// Patterns default to ./... in the current directory. It exits 1 when a
// package has errors. What it cannot check: C and Objective-C, vet's
// analyzers, linking, _test.go files.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	goarchs := flag.String("goarch", "arm64,amd64", "comma-separated darwin architectures to check")
	overlay := flag.String("overlay", "", "a go build -overlay `FILE`")
	verbose := flag.Bool("v", false, "list the packages checked")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: darwincheck [-goarch arm64,amd64] [-overlay FILE] [-v] [PATTERN...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	dir, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "darwincheck:", err)
		os.Exit(2)
	}
	failed := false
	for _, arch := range strings.Split(*goarchs, ",") {
		res, err := Check(Options{Dir: dir, GOARCH: strings.TrimSpace(arch), Patterns: flag.Args(), Overlay: *overlay})
		if err != nil {
			fmt.Fprintln(os.Stderr, "darwincheck:", err)
			os.Exit(2)
		}
		for _, p := range res.Problems {
			fmt.Fprintf(os.Stderr, "%s: %s\n", res.Target, p)
		}
		if *verbose {
			for _, p := range res.Checked {
				fmt.Printf("%s: checked %s\n", res.Target, p)
			}
		}
		status := "ok"
		if len(res.Problems) > 0 {
			status = fmt.Sprintf("%d problems", len(res.Problems))
			failed = true
		}
		fmt.Printf("darwincheck %s (cgo on): %d packages (%d cgo files), %d dependencies: %s\n",
			res.Target, len(res.Checked), res.CgoFiles, res.Deps, status)
	}
	if failed {
		os.Exit(1)
	}
}
