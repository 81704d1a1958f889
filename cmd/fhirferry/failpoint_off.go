//go:build !failpoints

package main

// failpointHook is nil in the binary users run: the crash tests build
// theirs with -tags failpoints (failpoint_on.go).
func failpointHook() func(string) { return nil }
