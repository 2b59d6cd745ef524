package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at link time: go build -ldflags "-X main.version=v0.1.0".
var version = "dev"

type versionInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func buildVersion() versionInfo {
	v := versionInfo{Version: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
			}
		}
	}
	return v
}

func newVersionCmd(e *env) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the ternctl version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := outputFlag(output); err != nil {
				return err
			}
			v := buildVersion()
			if output == "json" {
				b, err := json.Marshal(v)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "%s\n", b)
				return nil
			}
			fmt.Fprintf(e.stdout, "ternctl %s", v.Version)
			if v.Commit != "" {
				fmt.Fprintf(e.stdout, " (commit %.12s)", v.Commit)
			}
			fmt.Fprintf(e.stdout, " %s %s\n", v.Go, v.Platform)
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "text", "format: text or json")
	_ = c.RegisterFlagCompletionFunc("output", fixedCompletion("text", "json"))
	return c
}
