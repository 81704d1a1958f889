//go:build !race

package pipeline

const poisonFreed = false
