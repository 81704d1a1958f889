package duckdb

import (
	"math/bits"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

var _ memory.Allocator = (*poolAllocator)(nil)

const (
	poolAlign    = 64 // Arrow's buffer alignment
	poolMinClass = 12 // 4 KiB: smaller buffers come from make
	poolMaxClass = 24 // 16 MiB: larger ones too
	poolClasses  = poolMaxClass - poolMinClass + 1
	poolMinSize  = 1 << poolMinClass
)

// poolAllocator is a memory.Allocator that keeps freed buffers of 4 KiB to
// 16 MiB, by power-of-two size class, up to a bound on the bytes it holds,
// for writers that churn through large buffers (Parquet pages): a fresh
// buffer costs page faults when first written, which on the 500 MB
// benchmark were about a sixth of the process's CPU time. Like
// memory.GoAllocator it returns zeroed, 64-byte aligned memory, and the
// garbage collector still owns every buffer (one never freed is simply
// collected).
//
// Only code that keeps no reference to a buffer after freeing it may use
// one, which is why only the staging writers (statistics off) do: the
// transform's batches may not, because the Parquet lake's statistics keep
// slices of the values they were given after the batch is released.
type poolAllocator struct {
	mu       sync.Mutex
	free     [poolClasses][][]byte
	held     int // bytes in free
	maxBytes int
}

// newPoolAllocator returns a poolAllocator holding at most maxBytes of
// freed buffers.
func newPoolAllocator(maxBytes int) *poolAllocator { return &poolAllocator{maxBytes: maxBytes} }

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
func (p *poolAllocator) Allocate(size int) []byte {
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
func (p *poolAllocator) Reallocate(size int, b []byte) []byte {
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
func (p *poolAllocator) Free(b []byte) {
	c := cap(b)
	if c < poolMinSize || c > 1<<poolMaxClass || c&(c-1) != 0 {
		return // not one of ours
	}
	b = b[:c]
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
