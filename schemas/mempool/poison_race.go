//go:build race

package mempool

// poisonFreed: see PoolAllocator. Race-enabled builds are the ones CI runs
// every test in.
const poisonFreed = true
