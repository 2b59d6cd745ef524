package coordinator

import (
	"slices"
	"strings"
	"sync"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// views holds the status of every job and worker as last published by the
// loop, for the read-only RPCs: they never wait for the loop. Published
// messages are never modified afterwards (the loop builds a new one for
// every change), so readers may marshal them concurrently.
type views struct {
	mu      sync.Mutex
	jobs    map[string]*ternv1.Job
	workers []*ternv1.Worker
	// changed is closed, and replaced, whenever a job's status changes:
	// watchers wait on it.
	changed chan struct{}
}

func newViews() *views {
	return &views{jobs: map[string]*ternv1.Job{}, changed: make(chan struct{})}
}

// job returns a job's status, and a channel closed at its next change.
func (v *views) job(name string) (*ternv1.Job, <-chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.jobs[name], v.changed
}

// jobList returns every job's status, by name.
func (v *views) jobList() []*ternv1.Job {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]*ternv1.Job, 0, len(v.jobs))
	for _, j := range v.jobs {
		out = append(out, j)
	}
	slices.SortFunc(out, func(a, b *ternv1.Job) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (v *views) workerList() []*ternv1.Worker {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.workers
}

// putJob publishes a job's status; nil removes the job.
func (v *views) putJob(name string, j *ternv1.Job) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if j == nil {
		delete(v.jobs, name)
	} else {
		v.jobs[name] = j
	}
	close(v.changed)
	v.changed = make(chan struct{})
}

// putWorkers publishes the worker list, sorted by name.
func (v *views) putWorkers(ws []*ternv1.Worker) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.workers = ws
}
