package duckdb

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestChooseRewrites(t *testing.T) {
	views := []viewCost{{"a", 100}, {"b", 4000}, {"c", 50}, {"d", 2000}}
	mib := int64(1 << 20)
	require.Nil(t, chooseRewrites(200*mib, 1000, views), "7,150 vectors (112 MiB) fit 200 MiB")
	// 7,150 vectors need 111.7 MiB; 64 MiB holds 4,096: b (4,000) goes.
	require.Equal(t, map[string]bool{"b": true}, chooseRewrites(64*mib, 1000, views))
	// 32 MiB holds 2,048: b and d go, and 1,150 stay.
	require.Equal(t, map[string]bool{"b": true, "d": true}, chooseRewrites(32*mib, 1000, views))
	// The raw table alone exceeds it: every view goes, and the raw deletes stay.
	require.Equal(t, map[string]bool{"a": true, "b": true, "c": true, "d": true}, chooseRewrites(mib, 1000, views))
	require.Equal(t, map[string]bool{"a": true, "b": true, "c": true, "d": true}, chooseRewrites(-1, 0, views))
	require.Nil(t, chooseRewrites(-1, 0, nil))
	require.Equal(t, []viewCost{{"a", 100}, {"b", 4000}, {"c", 50}, {"d", 2000}}, views, "the caller's slice is left alone")
}
