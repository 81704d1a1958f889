package mempool

import (
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/require"
)

func aligned(b []byte) bool {
	return cap(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%poolAlign == 0
}

// TestPoolAllocatorRecycles: a freed buffer comes back zeroed and aligned
// for the next allocation of its class, growth within a class is in place
// and zeroes the new bytes, and the pool holds no more than its bound.
func TestPoolAllocatorRecycles(t *testing.T) {
	p := NewPoolAllocator(64 << 10)
	b := p.Allocate(5000)
	require.Len(t, b, 5000)
	require.Equal(t, 8192, cap(b))
	require.True(t, aligned(b))
	for i := range b {
		b[i] = 0xff
	}
	p.Free(b)
	c := p.Allocate(6000)
	require.Equal(t, unsafe.SliceData(b), unsafe.SliceData(c), "recycled")
	require.Equal(t, make([]byte, 6000), c, "zeroed")

	for i := range c {
		c[i] = 0xff
	}
	c = c[:100]
	grown := p.Reallocate(8000, c)
	require.Equal(t, unsafe.SliceData(c), unsafe.SliceData(grown), "grown in place")
	require.Equal(t, make([]byte, 7900), grown[100:], "new bytes zeroed")
	moved := p.Reallocate(9000, grown)
	require.Equal(t, 16384, cap(moved))
	require.True(t, aligned(moved))
	require.Equal(t, 8192, p.held, "the outgrown buffer went back to the pool")

	// Beyond the bound, freed buffers are left to the garbage collector.
	for range 20 {
		p.Free(alignedMake(8192, 8192))
	}
	require.LessOrEqual(t, p.held, 64<<10)

	// Buffers that are not of a pooled class are never kept.
	held := p.held
	p.Free(make([]byte, 100))
	p.Free(make([]byte, 5000))
	p.Free(p.Allocate(32 << 20))
	require.Equal(t, held, p.held)
	small := p.Allocate(10)
	require.Len(t, small, 10)
	require.True(t, aligned(small))
}

// TestPoolAllocatorWithArrow builds and releases record batches through
// the pool over and over: recycled buffers must never leak one batch's
// values or validity into another.
func TestPoolAllocatorWithArrow(t *testing.T) {
	p := NewPoolAllocator(8 << 20)
	for round := range 50 {
		b := array.NewStringBuilder(p)
		ib := array.NewInt64Builder(p)
		n := 1000 + round*37
		for i := range n {
			if (i+round)%3 == 0 {
				b.AppendNull()
				ib.AppendNull()
				continue
			}
			b.Append(string(rune('a' + (i+round)%26)))
			ib.Append(int64(i * round))
		}
		s, ints := b.NewStringArray(), ib.NewInt64Array()
		require.Equal(t, n, s.Len())
		for i := range n {
			if (i+round)%3 == 0 {
				require.True(t, s.IsNull(i) && ints.IsNull(i), "round %d row %d", round, i)
				continue
			}
			require.Equal(t, string(rune('a'+(i+round)%26)), s.Value(i))
			require.Equal(t, int64(i*round), ints.Value(i))
		}
		require.Equal(t, arrow.STRING, s.DataType().ID())
		s.Release()
		ints.Release()
		b.Release()
		ib.Release()
	}
	require.Positive(t, p.held, "released buffers were recycled")
}
