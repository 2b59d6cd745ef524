package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/spec"
)

// Exit codes. Scripts branch on them, so they do not change.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitInterrupted = 130 // 128 + SIGINT, what shells report for a Ctrl-C'd command
)

// usageError is a mistake in how ternctl was invoked, as opposed to a
// failure of what it was asked to do.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// exitCodeError ends the command with a code other than 1 after the command
// has already said what happened.
type exitCodeError struct{ code int }

func (e *exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// env is what commands may touch: their output streams and the terminal
// check, injected so tests can run commands in-process.
type env struct {
	stdin          io.Reader // for -f -
	stdout, stderr io.Writer
	isTerminal     func(io.Writer) bool
	now            func() time.Time // paces progress output
}

// run executes ternctl with args and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runEnv(ctx, args, &env{stdin: os.Stdin, stdout: stdout, stderr: stderr, isTerminal: isTerminal, now: time.Now})
}

func runEnv(ctx context.Context, args []string, e *env) int {
	entered := false // set when a command's RunE starts: errors before it are usage errors
	root := newRootCmd(e, &entered)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ce *exitCodeError
	if errors.As(err, &ce) {
		return ce.code
	}
	var cd *codedError
	if errors.As(err, &cd) {
		printError(e.stderr, err)
		return cd.code
	}
	var ue *usageError
	if errors.As(err, &ue) || !entered {
		fmt.Fprintf(e.stderr, "error: %v\n", err)
		name := "ternctl"
		if cmd != nil {
			name = cmd.CommandPath()
		}
		fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", name)
		return exitUsage
	}
	printError(e.stderr, err)
	return exitError
}

// printError writes an error as `error: ...`; a job spec with problems gets
// one line per problem.
func printError(w io.Writer, err error) {
	var es spec.Errors
	if errors.As(err, &es) {
		// The wrapping text (usually the file name) leads the list.
		head := strings.TrimSuffix(strings.TrimSuffix(err.Error(), es.Error()), ": ")
		if head == "" {
			head = "job spec"
		}
		noun := "problems"
		if len(es) == 1 {
			noun = "problem"
		}
		fmt.Fprintf(w, "error: %s: %d %s:\n", head, len(es), noun)
		for _, l := range es.Lines() {
			fmt.Fprintf(w, "  %s\n", l)
		}
		return
	}
	lines := strings.Split(strings.TrimRight(err.Error(), "\n"), "\n")
	fmt.Fprintf(w, "error: %s\n", lines[0])
	for _, l := range lines[1:] {
		fmt.Fprintf(w, "  %s\n", l)
	}
}

func newRootCmd(e *env, entered *bool) *cobra.Command {
	root := &cobra.Command{
		Use:   "ternctl",
		Short: "Train LLaMA-style language models with tern",
		Long: "ternctl trains LLaMA-style language models described by a TrainingJob spec.\n\n" +
			"Data goes to stdout, progress and errors to stderr. Exit codes: 0 ok, 1 error,\n" +
			"2 usage error, 3 no coordinator, 130 interrupted (`ternctl wait --help` has its own).",
		SilenceErrors: true,
		SilenceUsage:  true,
		// With no subcommand, show help (on stdout, as kubectl does).
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
				if sug := cmd.SuggestionsFor(args[0]); len(sug) > 0 {
					msg += fmt.Sprintf("; did you mean %q?", sug[0])
				}
				return &usageError{errors.New(msg)}
			}
			return cmd.Help()
		},
		Args: cobra.ArbitraryArgs,
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.CompletionOptions.DisableDefaultCmd = true
	root.SuggestionsMinimumDistance = 2
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	cf := &clusterFlags{}
	root.PersistentFlags().StringVar(&cf.addr, "coordinator", coordinatorDefault(), "coordinator address, host:port (env TERN_COORDINATOR)")
	cf.auth.Register(root.PersistentFlags())
	contextCredentialDefaults(root.PersistentFlags())
	for _, c := range []*cobra.Command{newTrainCmd(e), newPlanCmd(e, cf), newExplainCmd(e), newVersionCmd(e), newCompletionCmd(e, root), newRankCmd(e),
		newApplyCmd(e, cf), newGetCmd(e, cf), newWaitCmd(e, cf), newCancelCmd(e, cf), newDeleteCmd(e, cf), newDescribeCmd(e, cf), newCertsCmd(e),
		newUpCmd(e), newDownCmd(e), newSupervisorCmd(e), newConfigCmd(e)} {
		markEntered(c, entered)
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newLogsCmd(e, cf), newPauseCmd(e, cf), newResumeCmd(e, cf), newTopCmd(e, cf)} {
		markEntered(c, entered)
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newExportCmd(e, cf), newGenerateCmd(e, cf), newEvalCmd(e, cf)} {
		markEntered(c, entered)
		root.AddCommand(c)
	}
	return root
}

// markEntered wraps a command's RunE so runEnv can tell errors of the work
// from errors cobra raises while parsing the command line.
func markEntered(c *cobra.Command, entered *bool) {
	inner := c.RunE
	c.RunE = func(cmd *cobra.Command, args []string) error {
		*entered = true
		return inner(cmd, args)
	}
}

// isTerminal reports whether w is a character device such as a terminal.
// /dev/null is one too, which only means progress redraws go nowhere.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// outputFlag validates -o.
func outputFlag(v string) error {
	switch v {
	case "text", "json":
		return nil
	}
	return usagef("-o %q is not supported (allowed: text, json)", v)
}
