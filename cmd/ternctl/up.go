package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/localcluster"
)

// supervisorCommand is the hidden command `up` runs, detached, to keep the
// cluster's processes running.
const supervisorCommand = "local-supervisor"

type upFlags struct {
	spec    localcluster.Spec
	dir     string
	context string
	timeout time.Duration
	output  string
}

func newUpCmd(e *env) *cobra.Command {
	f := upFlags{spec: localcluster.Spec{Workers: localcluster.DefaultWorkers, Slots: localcluster.DefaultSlots,
		Listen: localcluster.DefaultListen}}
	var grace time.Duration
	c := &cobra.Command{
		Use:   "up [--workers N] [--slots S] [--spares S] [--dir DIR]",
		Short: "Start a local cluster: a coordinator and worker processes on this machine",
		Long: "Start a coordinator (with its embedded etcd) and worker agents as background\n" +
			"processes on this machine, wait until every worker has registered, and return;\n" +
			"the cluster keeps running until `ternctl down`. A supervisor restarts any of\n" +
			"them that dies (with backoff; not with --no-restart). Logs go to DIR/logs.\n\n" +
			"DIR defaults to ~/.tern/local ($TERN_HOME/local). The context named by\n" +
			"--context (default local) is pointed at the coordinator and made current, so\n" +
			"later ternctl commands talk to this cluster. The coordinator and worker\n" +
			"programs are looked for next to ternctl, then on PATH.",
		Example: "  ternctl up\n" +
			"  ternctl up --workers 4 --spares 1\n" +
			"  ternctl up --dir /tmp/c2 --listen 127.0.0.1:0 --context c2",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.spec.Grace = localcluster.Duration(grace)
			return upRun(cmd, e, &f)
		},
	}
	fl := c.Flags()
	fl.IntVar(&f.spec.Workers, "workers", f.spec.Workers, "worker processes")
	fl.IntVar(&f.spec.Slots, "slots", f.spec.Slots, "ranks each worker runs at once")
	fl.IntVar(&f.spec.Spares, "spares", 0, "extra workers, named spare-N and labelled spare=true: kept idle by placement as room to replace lost ranks")
	fl.StringVar(&f.dir, "dir", "", "the cluster's directory: state, etcd data, logs (default ~/.tern/local)")
	fl.BoolVar(&f.spec.NoRestart, "no-restart", false, "leave processes that die dead")
	fl.StringVar(&f.spec.Listen, "listen", f.spec.Listen, "the coordinator's address; port 0 picks a free one")
	fl.StringVar(&f.context, "context", "local", "the context to point at this cluster and make current; \"\" leaves contexts alone")
	fl.DurationVar(&f.timeout, "timeout", localcluster.DefaultReadyTimeout, "give up if the workers have not all registered by then")
	fl.DurationVar(&grace, "grace", localcluster.DefaultGrace, "at down, how long each process has after SIGTERM before SIGKILL")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text, or json (the cluster's state)")
	_ = c.MarkFlagDirname("dir")
	_ = c.RegisterFlagCompletionFunc("output", fixedCompletion("text", "json"))
	return c
}

func upRun(cmd *cobra.Command, e *env, f *upFlags) error {
	if err := outputFlag(f.output); err != nil {
		return err
	}
	dir, err := clusterDir(f.dir)
	if err != nil {
		return err
	}
	if err := f.spec.Validate(); err != nil {
		return usagef("%v", err)
	}
	if f.spec.CoordinatorBin, err = findProgram("coordinator"); err != nil {
		return err
	}
	if f.spec.WorkerBin, err = findProgram("worker"); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find ternctl itself to run the supervisor: %w", err)
	}
	if f.context != "" && !contextNameRE.MatchString(f.context) {
		return usagef("--context %q: use letters, digits, '.', '_' and '-'", f.context)
	}
	if f.output == "text" {
		fmt.Fprintf(e.stderr, "Starting a local cluster in %s: a coordinator and %d workers...\n", dir, f.spec.Workers+f.spec.Spares)
	}
	st, err := localcluster.Up(cmd.Context(), localcluster.UpOptions{Dir: dir, Spec: f.spec, ReadyTimeout: f.timeout,
		Supervisor: []string{self, supervisorCommand, dir}})
	already := errors.Is(err, localcluster.ErrAlreadyUp)
	if err != nil && !already {
		return err
	}
	if f.context != "" {
		if err := useLocalContext(f.context, st.Addr); err != nil {
			return fmt.Errorf("cluster up, but the context %q could not be saved: %w", f.context, err)
		}
	}
	if f.output == "json" {
		return writeStructured(e.stdout, "json", st)
	}
	ws := st.Workers()
	if already {
		fmt.Fprintf(e.stdout, "A local cluster is already up in %s: coordinator %s, %d workers. `ternctl down` stops it.\n", st.Dir, st.Addr, len(ws))
		return nil
	}
	fmt.Fprintf(e.stdout, "Local cluster up: coordinator %s (pid %d), %d %s × %d %s", st.Addr, st.Procs[0].PID,
		st.Spec.Workers, plural(st.Spec.Workers, "worker", "workers"), st.Spec.Slots, plural(st.Spec.Slots, "slot", "slots"))
	if st.Spec.Spares > 0 {
		fmt.Fprintf(e.stdout, " and %d spares", st.Spec.Spares)
	}
	fmt.Fprintln(e.stdout, ".")
	if f.context != "" {
		fmt.Fprintf(e.stdout, "Context %q is current: ternctl commands now talk to this cluster.\n", f.context)
	} else {
		fmt.Fprintf(e.stdout, "Pass --coordinator %s (or set TERN_COORDINATOR) to talk to it.\n", st.Addr)
	}
	fmt.Fprintf(e.stdout, "\n  ternctl get workers\n  ternctl apply -f examples/tiny.yaml\n  ternctl get jobs tiny -w\n\n")
	restart := "restarted by a supervisor if they die"
	if st.Spec.NoRestart {
		restart = "not restarted if they die (--no-restart)"
	}
	fmt.Fprintf(e.stdout, "Processes are %s; logs in %s.\nStop it with: ternctl down%s\n", restart, filepath.Join(st.Dir, "logs"), dirFlag(f.dir, st.Dir))
	return nil
}

// dirFlag repeats --dir in a hint when the user gave one.
func dirFlag(given, dir string) string {
	if given == "" {
		return ""
	}
	return " --dir " + dir
}

// clusterDir is --dir made absolute, or the default.
func clusterDir(dir string) (string, error) {
	if dir == "" {
		return localcluster.DefaultDir()
	}
	return filepath.Abs(dir)
}

// findProgram finds a tern program next to this ternctl (make build puts
// them together in bin/), else on PATH.
func findProgram(name string) (string, error) {
	if self, err := os.Executable(); err == nil {
		if self, err = filepath.EvalSymlinks(self); err == nil {
			p := filepath.Join(filepath.Dir(self), name)
			if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("no %s program next to ternctl or on PATH: run `make build`, which puts it in bin/", name)
	}
	return filepath.Abs(p)
}

// newSupervisorCmd is the detached process that keeps a local cluster's
// processes running. Users do not run it.
func newSupervisorCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:    supervisorCommand + " DIR",
		Short:  "Supervise a local cluster (started by ternctl up)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return localcluster.Supervise(cmd.Context(), args[0], e.stderr)
		},
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
