package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/imgcache/imgcache/errdefs"
)

// Settings come from flags, then environment, then a config file, then
// defaults. kong's own configuration loader would let a file override the
// environment, so this resolver consults the environment first itself and
// remembers where every value came from, for `imgcache config`.

// configFiles lists the config files in precedence order (first wins):
// $IMGCACHE_CONFIG, then $XDG_CONFIG_HOME/imgcache/config.json (default
// ~/.config/imgcache/config.json), then /etc/imgcache/config.json.
func configFiles() []string {
	if p := os.Getenv("IMGCACHE_CONFIG"); p != "" {
		return []string{p}
	}
	var out []string
	if d, err := os.UserConfigDir(); err == nil {
		out = append(out, filepath.Join(d, "imgcache", "config.json"))
	}
	return append(out, "/etc/imgcache/config.json")
}

// configFile is one parsed config file: flag name → value.
type configFile struct {
	path   string
	values map[string]any
}

func loadConfigFiles() ([]configFile, error) {
	var out []configFile
	for _, p := range configFiles() {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			if os.Getenv("IMGCACHE_CONFIG") == p {
				return nil, fmt.Errorf("%w: config file %s (from IMGCACHE_CONFIG) does not exist", errdefs.ErrInvalid, p)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("config file %s: %w", p, err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("%w: config file %s is not a JSON object of settings: %w", errdefs.ErrInvalid, p, err)
		}
		out = append(out, configFile{path: p, values: v})
	}
	return out, nil
}

// sources records where each setting's value came from.
type sources map[string]string

// resolver gives kong the value of a flag not set on the command line: from
// its environment variable, else from the first config file that sets it.
func resolver(files []configFile, src sources) kong.Resolver {
	return kong.ResolverFunc(func(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
		for _, env := range flag.Envs {
			if v, ok := os.LookupEnv(env); ok {
				src[flag.Name] = "env " + env
				return v, nil
			}
		}
		for _, f := range files {
			if v, ok := f.values[flag.Name]; ok {
				src[flag.Name] = "config " + f.path
				if n, ok := v.(float64); ok && n == float64(int64(n)) {
					return fmt.Sprint(int64(n)), nil
				}
				return v, nil
			}
		}
		return nil, nil
	})
}

// validateConfig refuses unknown keys, so a typo is not silently ignored.
func validateConfig(files []configFile, app *kong.Application) error {
	known := map[string]bool{}
	for _, f := range app.Flags {
		known[f.Name] = true
	}
	for _, f := range files {
		for k := range f.values {
			if !known[k] {
				var names []string
				for n := range known {
					if n != "help" && n != "version" {
						names = append(names, n)
					}
				}
				return fmt.Errorf("%w: config file %s: unknown setting %q (known: %s)", errdefs.ErrInvalid, f.path, k, strings.Join(sorted(names), ", "))
			}
		}
	}
	return nil
}
