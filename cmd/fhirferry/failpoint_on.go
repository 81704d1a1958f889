//go:build failpoints

package main

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// failpointHook lets the crash tests kill a real fhirferry process with
// SIGKILL at exact points of a run: FHIRFERRY_FAILPOINT=name[:n] kills the
// process the n-th time (default 1st) the run passes the named point (see
// pipeline.Runner.Failpoint). Only binaries built with -tags failpoints
// read the variable.
func failpointHook() func(string) {
	after := map[string]int{}
	for _, p := range strings.Split(os.Getenv("FHIRFERRY_FAILPOINT"), ",") {
		name, n, _ := strings.Cut(strings.TrimSpace(p), ":")
		if name == "" {
			continue
		}
		count, err := strconv.Atoi(n)
		if err != nil || count < 1 {
			count = 1
		}
		after[name] = count
	}
	if len(after) == 0 {
		return nil
	}
	var mu sync.Mutex
	return func(name string) {
		mu.Lock()
		defer mu.Unlock()
		n, ok := after[name]
		if !ok {
			return
		}
		if n > 1 {
			after[name] = n - 1
			return
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not delivered synchronously; never go on
	}
}
