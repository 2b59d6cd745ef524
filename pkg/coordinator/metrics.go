package coordinator

import ternv1 "github.com/ternml/tern/proto/tern/v1"

// Jobs returns every job's status as last published, by name: what
// ListJobs answers, without an RPC (for /metrics). Empty while this
// coordinator stands by.
func (c *Coordinator) Jobs() []*ternv1.Job { return c.views.jobList() }

// Workers returns the registered workers, by name, as last published.
func (c *Coordinator) Workers() []*ternv1.Worker { return c.views.workerList() }

// Leading reports whether this coordinator leads now.
func (c *Coordinator) Leading() bool { return c.loop.Load() != nil }
