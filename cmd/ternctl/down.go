package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/localcluster"
)

func newDownCmd(e *env) *cobra.Command {
	var dir string
	var purge bool
	var grace time.Duration
	c := &cobra.Command{
		Use:   "down [--dir DIR] [--purge]",
		Short: "Stop the local cluster that `ternctl up` started",
		Long: "Stop the local cluster in DIR (default ~/.tern/local): the workers first, each\n" +
			"stopping its ranks after their current step, then the coordinator; SIGKILL\n" +
			"for any that has not exited after the grace period. The coordinator's data\n" +
			"(its jobs) goes with it; the logs stay in DIR/logs unless --purge. With no\n" +
			"cluster up, it says so and exits 0.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if grace < 0 {
				return usagef("--grace %v is negative", grace)
			}
			d, err := clusterDir(dir)
			if err != nil {
				return err
			}
			res, err := localcluster.Down(cmd.Context(), d, grace, purge)
			if errors.Is(err, localcluster.ErrNotUp) {
				fmt.Fprintf(e.stderr, "No local cluster is up in %s: nothing to stop.\n", d)
				return nil
			}
			if err != nil {
				return fmt.Errorf("stop the local cluster in %s: %w", d, err)
			}
			if len(res.Leftover) > 0 {
				fmt.Fprintf(e.stderr, "The supervisor was gone; stopped what it left running: %s.\n", strings.Join(res.Leftover, ", "))
			}
			n := 0
			if res.State != nil {
				n = len(res.State.Workers())
			}
			logs := "logs kept in " + filepath.Join(d, "logs")
			if purge {
				logs = "logs removed"
			}
			fmt.Fprintf(e.stdout, "Local cluster in %s stopped (coordinator and %d workers); %s.\n", d, n, logs)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "the cluster's directory (default ~/.tern/local)")
	c.Flags().BoolVar(&purge, "purge", false, "also remove the logs")
	c.Flags().DurationVar(&grace, "grace", 0, "how long each process has after SIGTERM before SIGKILL (default: the one given to up)")
	_ = c.MarkFlagDirname("dir")
	return c
}
