package main

import (
	"fmt"
	"sort"
	"text/tabwriter"

	"github.com/alecthomas/kong"
)

type configCmd struct {
	JSON bool `help:"Print the settings as JSON."`
}

func (c *configCmd) Help() string {
	return "Prints every setting's effective value and where it came from: flag, env VAR, config FILE or default.\n" +
		"Config files (JSON objects keyed by flag name, e.g. {\"dir\": \"/srv/imgcache\", \"min-free\": \"20G\"}):\n" +
		"  $IMGCACHE_CONFIG, else $XDG_CONFIG_HOME/imgcache/config.json, then /etc/imgcache/config.json\n" +
		"Example:\n  IMGCACHE_MIN_FREE=20G imgcache config"
}

// setting is one row of `imgcache config`.
type setting struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Source string `json:"source"`
}

func (c *configCmd) Run(e *env, kctx *kong.Context) error {
	var rows []setting
	for _, f := range kctx.Model.Flags {
		if f.Name == "help" || f.Name == "version" {
			continue
		}
		src := "default"
		if s, ok := e.sources[f.Name]; ok {
			src = s
		}
		if onCommandLine(kctx, f) {
			src = "flag"
		}
		v := fmt.Sprint(f.Target.Interface())
		if f.Name == "dir" && v == "" {
			v, src = defaultDir(), "default"
		}
		rows = append(rows, setting{f.Name, v, src})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	if c.JSON {
		return printJSON(e.stdout, rows)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SETTING\tVALUE\tSOURCE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.Value, r.Source)
	}
	return tw.Flush()
}

func sorted(s []string) []string { sort.Strings(s); return s }

// onCommandLine reports whether the flag was given on the command line (not
// by a resolver: environment or config file).
func onCommandLine(kctx *kong.Context, f *kong.Flag) bool {
	for _, p := range kctx.Path {
		if p.Flag == f && !p.Resolved {
			return true
		}
	}
	return false
}
