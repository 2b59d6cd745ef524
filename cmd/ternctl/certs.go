package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/auth"
)

// maxCertDays bounds --days: ten years, as pkg/auth allows.
const maxCertDays = 3650

func newCertsCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "certs",
		Short: "Create the TLS certificates and join token a cluster beyond one machine needs",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newCertsCreateCmd(e))
	return c
}

func newCertsCreateCmd(e *env) *cobra.Command {
	var (
		dir   string
		hosts []string
		days  int
	)
	c := &cobra.Command{
		Use:   "create --dir DIR --hosts HOST,...",
		Short: "Write a CA, the coordinator's certificate and a join token",
		Long: "Write into DIR a new CA (" + auth.CACertFile + ", " + auth.CAKeyFile + "), a certificate and key for the\n" +
			"coordinator signed by it (" + auth.ServerCertFile + ", " + auth.ServerKeyFile + ") and a random join token (" + auth.TokenFile + ").\n" +
			"Keys and the token are written with mode 0600; existing files are never overwritten.\n\n" +
			"--hosts lists every DNS name and IP address workers and ternctl use to reach the\n" +
			"coordinator: clients refuse a certificate that does not name the host they dialled.\n\n" +
			"Then run the coordinator with --tls-cert DIR/" + auth.ServerCertFile + " --tls-key DIR/" + auth.ServerKeyFile + " --token-file DIR/" + auth.TokenFile + ",\n" +
			"and workers and ternctl with --tls-ca DIR/" + auth.CACertFile + " --token-file DIR/" + auth.TokenFile + " (or the TERN_TLS_* and\n" +
			"TERN_TOKEN_FILE environment variables). Keep " + auth.CAKeyFile + " offline: only new certificates need it.",
		Example: "  ternctl certs create --dir ~/.tern/certs --hosts coord.example.com,10.0.0.5\n" +
			"  ternctl certs create --dir certs --hosts tern-coordinator,tern-coordinator.tern.svc --days 90",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if dir == "" {
				return usagef("--dir is required: the directory to write the certificates and token into")
			}
			if len(hosts) == 0 {
				return usagef("--hosts is required: the DNS names and IP addresses clients reach the coordinator by, comma-separated")
			}
			if days < 1 || days > maxCertDays {
				return usagef("--days %d: want 1 to %d", days, maxCertDays)
			}
			paths, err := auth.CreateBundle(dir, auth.BundleOptions{Hosts: hosts, Validity: time.Duration(days) * 24 * time.Hour, Now: e.now()})
			for _, p := range paths {
				fmt.Fprintln(e.stdout, p)
			}
			if err != nil {
				// Exit 1, not 2: the root counts only its direct children's
				// errors as past the command line.
				return &codedError{fmt.Errorf("certs create: %w", err), exitError}
			}
			d := filepath.Dir(paths[0])
			fmt.Fprintf(e.stderr, "Certificates for %s, valid %d days.\n", strings.Join(hosts, ", "), days)
			fmt.Fprintf(e.stderr, "  coordinator: --tls-cert %s --tls-key %s --token-file %s\n",
				filepath.Join(d, auth.ServerCertFile), filepath.Join(d, auth.ServerKeyFile), filepath.Join(d, auth.TokenFile))
			fmt.Fprintf(e.stderr, "  workers and ternctl: --tls-ca %s --token-file %s\n", filepath.Join(d, auth.CACertFile), filepath.Join(d, auth.TokenFile))
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "directory to write into (created with mode 0700 if missing)")
	c.Flags().StringSliceVar(&hosts, "hosts", nil, "DNS names and IP addresses of the coordinator, comma-separated")
	c.Flags().IntVar(&days, "days", int(auth.DefaultValidity/(24*time.Hour)), "how many days the certificates are valid")
	_ = c.MarkFlagDirname("dir")
	return c
}
