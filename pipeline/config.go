package pipeline

import (
	"fmt"

	"github.com/robfig/cron/v3"

	"github.com/fhirferry/fhirferry/configs"
)

// LoadConfig loads a config file with every check, the scheduler's
// included: what the commands and the daemon's reload use.
func LoadConfig(path string) (*configs.Config, error) {
	return configs.Load(path, CheckSchedules)
}

// ParseConfig is LoadConfig for a config held in memory.
func ParseConfig(data []byte) (*configs.Config, error) {
	return configs.Parse(data, CheckSchedules)
}

// cronParser is the schedule syntax: 5 fields or a descriptor (@hourly,
// @every 10m).
func cronParser() cron.Parser {
	return cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
}

// CheckSchedules is the configs.Check of the sources' cron schedules.
func CheckSchedules(c *configs.Config) []string {
	var out []string
	p := cronParser()
	for i, s := range c.Sources {
		if s.Schedule == "" {
			continue
		}
		if _, err := p.Parse(s.Schedule); err != nil {
			out = append(out, fmt.Sprintf("%s: schedule %q: %v", configs.SourceAt(i, s), s.Schedule, err))
		}
	}
	return out
}
