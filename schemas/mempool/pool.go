// Package mempool holds the Arrow buffer allocator the transform and the
// sinks share. It is a leaf: the process builds one pool (pipeline.Build)
// and passes it to every component that allocates batches or pages, so a
// buffer freed by one is reused by the other; nothing here is global.
package mempool

import (
	"math/bits"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

var _ memory.Allocator = (*PoolAllocator)(nil)

// DefaultBytes bounds the freed buffers a pool holds unless told otherwise.
const DefaultBytes = 32 << 20

const (
	poolAlign    = 64 // Arrow's buffer alignment
	poolMinClass = 12 // 4 KiB: smaller buffers come from make
	poolMaxClass = 24 // 16 MiB: larger ones too
	poolClasses  = poolMaxClass - poolMinClass + 1
	poolMinSize  = 1 << poolMinClass
	// poisonByte fills freed buffers under the race detector: a UTF-8
	// continuation byte, so poisoned text is never valid UTF-8.
	poisonByte = 0xA5
)

// PoolAllocator is a memory.Allocator that keeps freed buffers of 4 KiB to
// 16 MiB, by power-of-two size class, up to a bound on the bytes it holds,
// for code that churns through large buffers (record batches, Parquet
// pages): a fresh buffer costs page faults when first written, which on
// this project's benchmarks were a sixth of a load's CPU time, and with
// the default views a third of the transform's. Like memory.GoAllocator
// it returns zeroed, 64-byte aligned memory, and the garbage collector
// still owns every buffer (one never freed is simply collected).
//
// The price is a rule every consumer of such memory must keep: nothing may
// hold a slice of a buffer, or a string made from one without a copy
// (array.String.Value), after releasing the array it came from, because
// the buffer is then reused for other rows. Sinks copy what they keep
// (strings.Clone for keys) or hold a reference for as long as they need
// the bytes (the Parquet lake holds batches until their row group's
// statistics are written). Under the race detector freed buffers are
// overwritten with poisonByte, so a test that reads memory after its
// release sees garbage instead of passing by luck.
type PoolAllocator struct {
	mu       sync.Mutex
	free     [poolClasses][][]byte
	held     int // bytes in free
	maxBytes int
}

// NewPoolAllocator returns a PoolAllocator holding at most maxBytes of
// freed buffers.
func NewPoolAllocator(maxBytes int) *PoolAllocator { return &PoolAllocator{maxBytes: maxBytes} }

// class returns the size class of a buffer of size bytes, or -1 when such
// buffers are not pooled.
func class(size int) int {
	if size <= 0 || size > 1<<poolMaxClass {
		return -1
	}
	if size < poolMinSize {
		size = poolMinSize
	}
	return bits.Len(uint(size-1)) - poolMinClass
}

// Allocate implements memory.Allocator.
func (p *PoolAllocator) Allocate(size int) []byte {
	c := class(size)
	if c < 0 {
		return alignedMake(size, size)
	}
	p.mu.Lock()
	if n := len(p.free[c]); n > 0 {
		b := p.free[c][n-1]
		p.free[c] = p.free[c][:n-1]
		p.held -= cap(b)
		p.mu.Unlock()
		b = b[:size]
		clear(b)
		return b
	}
	p.mu.Unlock()
	return alignedMake(size, 1<<(c+poolMinClass))
}

// Reallocate implements memory.Allocator.
func (p *PoolAllocator) Reallocate(size int, b []byte) []byte {
	if size <= cap(b) {
		old := len(b)
		b = b[:size]
		if size > old {
			clear(b[old:])
		}
		return b
	}
	nb := p.Allocate(size)
	copy(nb, b)
	p.Free(b)
	return nb
}

// Free implements memory.Allocator.
func (p *PoolAllocator) Free(b []byte) {
	b = b[:cap(b)]
	if poisonFreed {
		for i := range b {
			b[i] = poisonByte
		}
	}
	c := len(b)
	if c < poolMinSize || c > 1<<poolMaxClass || c&(c-1) != 0 {
		return // not one of ours
	}
	p.mu.Lock()
	if p.held+c <= p.maxBytes {
		p.free[class(c)] = append(p.free[class(c)], b)
		p.held += c
	}
	p.mu.Unlock()
}

// alignedMake returns zeroed memory of len size and cap capacity, aligned
// to poolAlign.
func alignedMake(size, capacity int) []byte {
	buf := make([]byte, capacity+poolAlign)
	shift := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(buf))) % poolAlign); r != 0 {
		shift = poolAlign - r
	}
	return buf[shift : shift+size : shift+capacity]
}
