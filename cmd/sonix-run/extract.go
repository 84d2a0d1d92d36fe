package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sonix-run/sonix-run/kernelimage"
	"github.com/sonix-run/sonix-run/launcher"
)

const extractUsage = `Usage: sonix-run extract-kernel [OPTIONS] IMAGE

Print the path of the kernel file QEMU boots fastest for the kernel IMAGE:
for an x86 bzImage whose vmlinux has the PVH entry note, that vmlinux,
decompressed into the kernel cache on first use; for any other kernel, or
when the cache cannot serve it right now, IMAGE itself. The scripts that
--dry-run prints run it before QEMU:
  kernel=$(sonix-run extract-kernel /nix/store/...-linux/bzImage)
(with --cached-only under KVM, where a kernel decompresses itself faster
than sonix-run extracts it).

The kernel cache: %s
It may be deleted at any time.

Options:
`

func cmdExtractKernel(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	dir, dirErr := kernelimage.DefaultCacheDir()
	shown := dir
	if dirErr != nil {
		shown = "none here: " + dirErr.Error()
	}
	usage := fmt.Sprintf(extractUsage, shown)
	fs := newVerb("extract-kernel", usage)
	verbose := fs.BoolP("verbose", "v", false, "say on stderr which file it is, and why")
	cachedOnly := fs.Bool("cached-only", false, "print the vmlinux only when the cache holds it already; never decompress")
	if code, done := fs.parse(args, stdout, stderr); done {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(stderr, " extract-kernel", "expected one kernel IMAGE, got %d arguments", fs.NArg())
	}
	image := fs.Arg(0)
	if st, err := os.Stat(image); err != nil {
		fmt.Fprintf(stderr, "sonix-run extract-kernel: %v\n", err)
		return exitUsage
	} else if !st.Mode().IsRegular() {
		fmt.Fprintf(stderr, "sonix-run extract-kernel: %s: not a regular file\n", image)
		return exitUsage
	}
	say := func(format string, args ...any) {
		if *verbose {
			fmt.Fprintf(stderr, "sonix-run extract-kernel: "+format+"\n", args...)
		}
	}
	if dirErr != nil {
		say("%s as it is: %v", image, dirErr)
		fmt.Fprintln(stdout, image)
		return exitOK
	}
	// A signal stops the extraction (the cache removes what it was
	// writing) and exits 128+N, as a run does.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, launcher.StopSignals...)
	defer signal.Stop(signals)
	caught := make(chan os.Signal, 1)
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case sig := <-signals:
			caught <- sig
			cancel()
		case <-ctx.Done():
		}
	}()
	cache := kernelimage.NewCache(dir, kernelimage.DefaultMaxBytes)
	find := cache.BootableELF
	if *cachedOnly {
		find = cache.CachedELF
	}
	elf, note, err := find(ctx, image)
	cancel()
	<-watcherDone
	if err != nil {
		status := exitSignalBase + int(syscall.SIGINT)
		select {
		case sig := <-caught:
			if s, ok := sig.(syscall.Signal); ok {
				status = exitSignalBase + int(s)
			}
		default:
		}
		fmt.Fprintf(stderr, "sonix-run extract-kernel: stopped: %v\n", err)
		return status
	}
	if elf == "" {
		say("%s as it is: %s", image, note)
		fmt.Fprintln(stdout, image)
		return exitOK
	}
	say("%s: %s", elf, note)
	fmt.Fprintln(stdout, elf)
	return exitOK
}
