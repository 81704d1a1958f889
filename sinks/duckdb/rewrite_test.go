package duckdb

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestChooseRewrites(t *testing.T) {
	require.Equal(t, 256<<10, rowGroupPin, "a 16,384-row group's 8 vector records fit one 256 KiB block")
	views := []viewCost{{"a", 100}, {"b", 250}, {"c", 50}, {"d", 120}}
	mib := int64(1 << 20)
	require.Nil(t, chooseRewrites(200*mib, 200, views), "720 row groups (180 MiB) fit 200 MiB")
	// 720 row groups need 180 MiB; 128 MiB holds 512: b (250) goes.
	require.Equal(t, map[string]bool{"b": true}, chooseRewrites(128*mib, 200, views))
	// 96 MiB holds 384: b and d go, and 350 stay.
	require.Equal(t, map[string]bool{"b": true, "d": true}, chooseRewrites(96*mib, 200, views))
	// The raw table alone exceeds it: every view goes, and the raw deletes stay.
	require.Equal(t, map[string]bool{"a": true, "b": true, "c": true, "d": true}, chooseRewrites(32*mib, 200, views))
	require.Equal(t, map[string]bool{"a": true, "b": true, "c": true, "d": true}, chooseRewrites(-1, 0, views))
	require.Nil(t, chooseRewrites(-1, 0, nil))
	require.Equal(t, []viewCost{{"a", 100}, {"b", 250}, {"c", 50}, {"d", 120}}, views, "the caller's slice is left alone")
}
