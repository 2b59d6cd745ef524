package localcluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ternml/tern/pkg/atomicfile"
)

// File names inside a cluster's directory.
const (
	specFile       = "spec.json"  // what up asked for; read by the supervisor
	stateFile      = "state.json" // the running processes; removed by down
	lockFile       = "lock"       // flock held by the supervisor while it lives
	logDir         = "logs"
	coordinatorDir = "coordinator" // the embedded etcd's data
)

// Roles of the processes of a cluster.
const (
	RoleCoordinator = "coordinator"
	RoleWorker      = "worker"
	RoleSpare       = "spare"
)

// Spec is what a cluster is made of. Up fills in the defaults and writes
// it for the supervisor.
type Spec struct {
	// Listen is the coordinator's address; port 0 picks a free port once,
	// which the coordinator then keeps across restarts.
	Listen string `json:"listen"`
	// Workers run jobs; Spares are further workers, named spare-N and
	// labelled spare=true, as room to replace lost ranks: placement leaves
	// them idle until a rank has to move (pkg/coordinator/sched).
	Workers int `json:"workers"`
	Spares  int `json:"spares"`
	// Slots is how many ranks each worker runs at once.
	Slots int `json:"slots"`
	// NoRestart leaves a process that died dead.
	NoRestart bool `json:"no_restart"`
	// Grace is how long a process has to exit after SIGTERM before SIGKILL.
	Grace Duration `json:"grace"`
	// CoordinatorBin and WorkerBin are the programs to run (absolute paths).
	CoordinatorBin string `json:"coordinator_bin"`
	WorkerBin      string `json:"worker_bin"`
}

// Proc is one process of a running cluster as state.json records it.
type Proc struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// PID is 0 while the process is not running (waiting to be restarted,
	// or dead with NoRestart).
	PID int `json:"pid"`
	// StartTicks is the process's start time in clock ticks since boot
	// (/proc/PID/stat), 0 where unknown: a pid with another start time is
	// another process.
	StartTicks uint64    `json:"start_ticks,omitempty"`
	Started    time.Time `json:"started"`
	Restarts   int       `json:"restarts"`
	// LastExit says how the previous run of it ended, e.g. "signal: killed".
	LastExit string `json:"last_exit,omitempty"`
	Log      string `json:"log"`
}

// State is a running cluster: state.json.
type State struct {
	Dir string `json:"dir"`
	// Addr is the coordinator's address, port resolved.
	Addr       string    `json:"addr"`
	Spec       Spec      `json:"spec"`
	Supervisor Proc      `json:"supervisor"`
	Procs      []Proc    `json:"procs"` // the coordinator first, then workers and spares
	Started    time.Time `json:"started"`
}

// Workers returns the worker and spare processes.
func (s *State) Workers() []Proc {
	var ws []Proc
	for _, p := range s.Procs {
		if p.Role != RoleCoordinator {
			ws = append(ws, p)
		}
	}
	return ws
}

// Proc returns the process named name.
func (s *State) Proc(name string) (Proc, bool) {
	for _, p := range s.Procs {
		if p.Name == name {
			return p, true
		}
	}
	return Proc{}, false
}

// ReadState reads dir's state.json; ErrNotUp when there is none.
func ReadState(dir string) (*State, error) {
	var s State
	if err := readJSON(filepath.Join(dir, stateFile), &s); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotUp
		}
		return nil, err
	}
	return &s, nil
}

// ErrNotUp says no local cluster runs in a directory.
var ErrNotUp = errors.New("no local cluster is up")

func writeJSON(path string, v any) error {
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	})
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Duration is a time.Duration written as text ("15s") in JSON.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
