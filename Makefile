# sonix-run: building and, on macOS, signing.
#
#   make                build ./sonix-run
#   make sign-darwin    build, then ad-hoc sign it with vz/vz.entitlements (macOS)
#   make darwincheck    type-check the macOS code (cgo on) from any OS

GO ?= go
BINARY ?= sonix-run
ENTITLEMENTS := vz/vz.entitlements

.PHONY: all build sign-darwin darwincheck

all: build

build:
	$(GO) build -o $(BINARY) ./cmd/sonix-run

# Virtualization.framework runs VMs only for a process signed with the
# com.apple.security.virtualization entitlement; an ad-hoc signature (-s -)
# is enough. Sign after anything that rewrites the binary (strip does).
sign-darwin: build
	codesign --entitlements $(ENTITLEMENTS) -f -s - $(BINARY)

darwincheck:
	$(GO) run ./internal/darwincheck ./...
