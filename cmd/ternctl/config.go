package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newConfigCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "config SUBCOMMAND",
		Short: "Manage contexts: which coordinator ternctl talks to",
		Long: "Manage the contexts in ~/.tern/config ($TERN_CONFIG, or config under\n" +
			"$TERN_HOME): each names a coordinator, and the current one is where cluster\n" +
			"commands go. --coordinator and $TERN_COORDINATOR override it. `ternctl up`\n" +
			"creates a context named local and makes it current.",
		Example: "  ternctl config get-contexts\n" +
			"  ternctl config set-context lab --coordinator 10.0.0.5:7070 --token-file ~/lab.token\n" +
			"  ternctl config use-context lab",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	for _, sub := range []*cobra.Command{newConfigViewCmd(e), newGetContextsCmd(e), newCurrentContextCmd(e),
		newUseContextCmd(e), newSetContextCmd(e), newDeleteContextCmd(e)} {
		failuresExit1(sub)
		c.AddCommand(sub)
	}
	return c
}

// failuresExit1 makes a subcommand's errors exit 1 rather than 2: the root
// marks only its direct children as entered, and errors of commands it
// has not marked count as usage errors.
func failuresExit1(c *cobra.Command) {
	inner := c.RunE
	c.RunE = func(cmd *cobra.Command, args []string) error {
		err := inner(cmd, args)
		var ue *usageError
		if err != nil && !errors.As(err, &ue) {
			return &codedError{err, exitError}
		}
		return err
	}
}

// contextNameCompletion offers the configured contexts' names.
func contextNameCompletion(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, _, err := loadConfig()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return c.names(), cobra.ShellCompDirectiveNoFileComp
}

func newConfigViewCmd(e *env) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "view",
		Short: "Print the config file (YAML, or -o json)",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if output != "yaml" && output != "json" {
				return usagef("-o %q is not supported (allowed: yaml, json)", output)
			}
			c, _, err := loadConfig()
			if err != nil {
				return err
			}
			if c.Contexts == nil {
				c.Contexts = []clusterContext{}
			}
			return writeStructured(e.stdout, output, c)
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "yaml", "output format: yaml or json")
	_ = c.RegisterFlagCompletionFunc("output", fixedCompletion("yaml", "json"))
	return c
}

func newGetContextsCmd(e *env) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "get-contexts",
		Short: "List the contexts; * marks the current one",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if output != "" && output != "name" {
				return usagef("-o %q is not supported (allowed: name)", output)
			}
			c, p, err := loadConfig()
			if err != nil {
				return err
			}
			if output == "name" {
				for _, x := range c.Contexts {
					fmt.Fprintln(e.stdout, x.Name)
				}
				return nil
			}
			if len(c.Contexts) == 0 {
				fmt.Fprintf(e.stderr, "No contexts in %s: `ternctl up` or `ternctl config set-context` adds one.\n", p)
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 0, 3, ' ', 0)
			fmt.Fprintln(tw, "CURRENT\tNAME\tCOORDINATOR\tTOKEN-FILE\tTLS-CA")
			for _, x := range c.Contexts {
				cur := ""
				if x.Name == c.CurrentContext {
					cur = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cur, x.Name, x.Coordinator, orNone(x.TokenFile), orNone(x.TLSCA))
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: name (default: a table)")
	_ = c.RegisterFlagCompletionFunc("output", fixedCompletion("name"))
	return c
}

func newCurrentContextCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "current-context",
		Short: "Print the current context's name",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			c, _, err := loadConfig()
			if err != nil {
				return err
			}
			if c.CurrentContext == "" {
				return errors.New("no current context: `ternctl config use-context NAME` sets one")
			}
			fmt.Fprintln(e.stdout, c.CurrentContext)
			return nil
		},
	}
}

func newUseContextCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:               "use-context NAME",
		Short:             "Make a context the current one",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: contextNameCompletion,
		RunE: func(_ *cobra.Command, args []string) error {
			c, p, err := loadConfig()
			if err != nil {
				return err
			}
			if c.find(args[0]) == nil {
				return unknownContext(c, args[0])
			}
			c.CurrentContext = args[0]
			if err := c.save(p); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Switched to context %q.\n", args[0])
			return nil
		},
	}
}

func unknownContext(c *ternConfig, name string) error {
	if len(c.Contexts) == 0 {
		return fmt.Errorf("no context named %q: there are none yet (`ternctl config set-context` adds one)", name)
	}
	return fmt.Errorf("no context named %q (have: %s)", name, strings.Join(c.names(), ", "))
}

func newSetContextCmd(e *env) *cobra.Command {
	var coord, tokenFile, tlsCA string
	var current bool
	c := &cobra.Command{
		Use:   "set-context NAME [--coordinator HOST:PORT] [--token-file FILE]",
		Short: "Create a context, or change one",
		Long: "Create a context, or change the fields given of an existing one. A new\n" +
			"context needs --coordinator. --token-file \"\" (or --tls-ca \"\") removes one. While\n" +
			"the context is current, its token file and CA are the defaults of the global\n" +
			"--token-file and --tls-ca.",
		Example:           "  ternctl config set-context lab --coordinator 10.0.0.5:7070 --token-file lab/token --tls-ca lab/ca.pem --current",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: contextNameCompletion,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, p, err := loadConfig()
			if err != nil {
				return err
			}
			x := clusterContext{Name: args[0]}
			if old := c.find(args[0]); old != nil {
				x = *old
			} else if !cmd.Flags().Changed("coordinator") {
				return usagef("context %q is new: pass --coordinator HOST:PORT", args[0])
			}
			// The command's own --coordinator shadows the global flag of
			// the same name: here it is the context's address.
			if cmd.Flags().Changed("coordinator") {
				x.Coordinator = coord
			}
			for _, fv := range []struct {
				name, val string
				field     *string
			}{{"token-file", tokenFile, &x.TokenFile}, {"tls-ca", tlsCA, &x.TLSCA}} {
				if !cmd.Flags().Changed(fv.name) {
					continue
				}
				*fv.field = fv.val
				if fv.val != "" {
					if *fv.field, err = filepath.Abs(fv.val); err != nil {
						return err
					}
				}
			}
			if err := checkContext(x); err != nil {
				return usagef("%v", err)
			}
			verb := "modified"
			if c.set(x) {
				verb = "created"
			}
			if current {
				c.CurrentContext = x.Name
			}
			if err := c.save(p); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Context %q %s.\n", x.Name, verb)
			return nil
		},
	}
	c.Flags().StringVar(&coord, "coordinator", "", "the context's coordinator address, host:port")
	c.Flags().StringVar(&tokenFile, "token-file", "", "file holding the coordinator's join token (for a coordinator off loopback)")
	c.Flags().StringVar(&tlsCA, "tls-ca", "", "PEM CA certificate to verify the coordinator's TLS certificate with")
	c.Flags().BoolVar(&current, "current", false, "also make it the current context")
	return c
}

func newDeleteContextCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:               "delete-context NAME",
		Short:             "Remove a context (if current, no context is current afterwards)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: contextNameCompletion,
		RunE: func(_ *cobra.Command, args []string) error {
			c, p, err := loadConfig()
			if err != nil {
				return err
			}
			if !c.remove(args[0]) {
				return unknownContext(c, args[0])
			}
			if err := c.save(p); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Context %q deleted.\n", args[0])
			return nil
		},
	}
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
