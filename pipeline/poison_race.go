//go:build race

package pipeline

// poisonFreed: see PoolAllocator. Race-enabled builds are the ones CI runs
// every test in.
const poisonFreed = true
