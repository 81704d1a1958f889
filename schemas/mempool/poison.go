//go:build !race

package mempool

const poisonFreed = false
