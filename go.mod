module github.com/sonix-run/sonix-run

go 1.23

require (
	github.com/Code-Hex/vz/v3 v3.7.1
	github.com/creack/pty v1.1.24
	github.com/digitalocean/go-qemu v0.0.0-20250212194115-ee9b0668d242
	github.com/hashicorp/go-multierror v1.1.1
	github.com/hashicorp/yamux v0.1.2
	github.com/klauspost/compress v1.18.0
	github.com/pierrec/lz4/v4 v4.1.33
	github.com/rogpeppe/go-internal v1.14.1
	github.com/spf13/pflag v1.0.10
	github.com/ulikunitz/xz v0.5.17
	golang.org/x/sys v0.30.0
	golang.org/x/term v0.29.0
)

require (
	github.com/Code-Hex/go-infinity-channel v1.0.0 // indirect
	github.com/digitalocean/go-libvirt v0.0.0-20220804181439-8648fbde413e // indirect
	github.com/hashicorp/errwrap v1.0.0 // indirect
	golang.org/x/mod v0.22.0 // indirect
	golang.org/x/tools v0.26.0 // indirect
)
