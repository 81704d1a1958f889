package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/transform"
)

// ConfigReport is what CheckConfig found in a config file.
type ConfigReport struct {
	// Problems stop a start: every one is listed, each naming its key or
	// line.
	Problems []string
	// Warnings do not stop a start here but may stop a run elsewhere: a
	// key file missing on this machine is often present on the server.
	Warnings []string
	Config   *configs.Config // nil when the file does not decode
	// Memory is the effective memory settings, derived from memory_budget
	// or set explicitly.
	Memory string
}

// CheckConfig checks the config file at path as a start would, without
// touching the network, the warehouse or the disk beyond reading the file
// and its views: the file's own rules, the schedules, the views (each one
// compiled) and the sink types this binary has (sinkTypes); files the
// config names that are missing are warnings.
func CheckConfig(path string, sinkTypes []string) (*ConfigReport, error) {
	rep := &ConfigReport{}
	cfg, err := LoadConfig(path)
	var ce *configs.Error
	switch {
	case errors.As(err, &ce):
		rep.Problems = append(rep.Problems, ce.Problems...)
		return rep, nil
	case err != nil:
		return nil, err
	}
	rep.Config = cfg
	var over string
	if _, err := transform.LoadViews(cfg.Views.DefaultsOn(), cfg.Views.Dir); err != nil {
		rep.Problems = append(rep.Problems, "views: "+err.Error())
	}
	for i, sc := range cfg.Sinks {
		at := fmt.Sprintf("sinks[%d] (%s)", i, sc.Name)
		if !slices.Contains(sinkTypes, sc.Type) {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: this build has no sink type %q", at, sc.Type))
		}
	}
	for i, s := range cfg.Sources {
		at := configs.SourceAt(i, s)
		for key, f := range map[string]string{
			"auth.private_key_file": s.Auth.PrivateKeyFile, "auth.token_file": s.Auth.TokenFile, "http.ca_file": s.HTTP.CAFile,
		} {
			if f == "" {
				continue
			}
			if _, err := os.Stat(f); err != nil {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: %s: %v", at, key, err))
			}
		}
	}
	if rep.Memory, over = cfg.Memory(); over != "" {
		rep.Warnings = append(rep.Warnings, over)
	}
	if _, err := os.Stat(filepath.Dir(cfg.DataDir)); err != nil {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("data_dir %s: its parent folder: %v", cfg.DataDir, err))
	}
	slices.Sort(rep.Warnings)
	return rep, nil
}
