package pipeline

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestParseConfigChecksSchedules: a schedule the scheduler cannot parse is
// reported with the config's other problems, naming the source.
func TestParseConfigChecksSchedules(t *testing.T) {
	_, err := ParseConfig([]byte(`
log: {level: loud}
sources:
  - {name: a, base_url: "http://x/fhir", schedule: "not cron"}
  - {name: b, base_url: "http://x/fhir", schedule: "@every 10m"}
  - {name: c, base_url: "http://x/fhir", schedule: "0 3 * * *"}
`))
	require.ErrorContains(t, err, `sources[0] (a): schedule "not cron"`)
	require.ErrorContains(t, err, "log.level")
	require.NotContains(t, err.Error(), "(b)")
	require.NotContains(t, err.Error(), "(c)")
}
