package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Job is a job record. Spec and State are the caller's bytes (JSON in
// practice), stored and returned unchanged.
type Job struct {
	Name  string
	Spec  []byte
	State []byte
	// Revision is the etcd revision that last wrote the record. A
	// conditional update names it; a watch event carries it.
	Revision int64
	// Created is the revision that created the record. A job deleted and
	// applied again under the same name gets a new Created.
	Created int64
}

// Attempt is one attempt of a job, numbered from 0.
type Attempt struct {
	N        int
	Value    []byte
	Revision int64
}

// Assignment is a job's current placement of ranks on workers.
type Assignment struct {
	Value    []byte
	Revision int64
}

// Committed is a job's last committed step and the manifest of the state
// saved at that step.
type Committed struct {
	Step     uint64
	Manifest []byte
	// Revision is the revision of the commit, 0 when nothing is committed.
	Revision int64
}

// recordVersion is the format version of the envelopes below. A reader
// refuses versions it does not know instead of guessing.
const recordVersion = 1

// jobRecord is how a Job is stored: one key, so spec and state change
// together in one revision.
type jobRecord struct {
	V     int    `json:"v"`
	Spec  []byte `json:"spec"`
	State []byte `json:"state"`
}

type committedRecord struct {
	V        int    `json:"v"`
	Step     uint64 `json:"step"`
	Manifest []byte `json:"manifest,omitempty"`
}

func encodeJob(spec, state []byte) ([]byte, error) {
	return json.Marshal(jobRecord{V: recordVersion, Spec: spec, State: state})
}

func (s *Store) decodeJob(kv *mvccpb.KeyValue) (Job, error) {
	name := strings.TrimPrefix(string(kv.Key), s.jobsPrefix())
	var r jobRecord
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return Job{}, fmt.Errorf("decode job %q at revision %d: %w", name, kv.ModRevision, err)
	}
	if r.V != recordVersion {
		return Job{}, fmt.Errorf("decode job %q: record version %d, this build reads version %d", name, r.V, recordVersion)
	}
	return Job{Name: name, Spec: r.Spec, State: r.State, Revision: kv.ModRevision, Created: kv.CreateRevision}, nil
}

func decodeCommitted(job string, kv *mvccpb.KeyValue) (Committed, error) {
	var r committedRecord
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return Committed{}, fmt.Errorf("decode committed step of job %q: %w", job, err)
	}
	if r.V != recordVersion {
		return Committed{}, fmt.Errorf("decode committed step of job %q: record version %d, this build reads version %d", job, r.V, recordVersion)
	}
	return Committed{Step: r.Step, Manifest: r.Manifest, Revision: kv.ModRevision}, nil
}

// get reads one key; a missing key is ErrNotFound wrapped with what.
func (s *Store) get(ctx context.Context, key, what string) (*mvccpb.KeyValue, error) {
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", what, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return resp.Kvs[0], nil
}

// GetJob returns the job named name.
func (s *Store) GetJob(ctx context.Context, name string) (Job, error) {
	if err := checkName("job", name); err != nil {
		return Job{}, err
	}
	kv, err := s.get(ctx, s.jobKey(name), fmt.Sprintf("job %q", name))
	if err != nil {
		return Job{}, err
	}
	return s.decodeJob(kv)
}

// ListJobs returns every job, ordered by name, and the revision the list
// was read at: pass it to WatchJobs to see every change after the list.
func (s *Store) ListJobs(ctx context.Context) ([]Job, int64, error) {
	resp, err := s.cli.Get(ctx, s.jobsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list jobs: %w", err)
	}
	jobs := make([]Job, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		j, err := s.decodeJob(kv)
		if err != nil {
			return nil, 0, fmt.Errorf("list jobs: %w", err)
		}
		jobs = append(jobs, j)
	}
	return jobs, resp.Header.Revision, nil
}

// GetAttempt returns attempt n of job.
func (s *Store) GetAttempt(ctx context.Context, job string, n int) (Attempt, error) {
	if err := checkName("job", job); err != nil {
		return Attempt{}, err
	}
	if err := checkAttempt(n); err != nil {
		return Attempt{}, err
	}
	kv, err := s.get(ctx, s.attemptKey(job, n), fmt.Sprintf("attempt %d of job %q", n, job))
	if err != nil {
		return Attempt{}, err
	}
	return Attempt{N: n, Value: kv.Value, Revision: kv.ModRevision}, nil
}

// ListAttempts returns job's attempts in order. A job without attempts
// yields an empty list, not an error.
func (s *Store) ListAttempts(ctx context.Context, job string) ([]Attempt, error) {
	if err := checkName("job", job); err != nil {
		return nil, err
	}
	pfx := s.attemptsPrefix(job)
	resp, err := s.cli.Get(ctx, pfx, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list attempts of job %q: %w", job, err)
	}
	out := make([]Attempt, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		n, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), pfx))
		if err != nil {
			return nil, fmt.Errorf("list attempts of job %q: malformed key %q", job, kv.Key)
		}
		out = append(out, Attempt{N: n, Value: kv.Value, Revision: kv.ModRevision})
	}
	return out, nil
}

// GetAssignment returns job's current assignment.
func (s *Store) GetAssignment(ctx context.Context, job string) (Assignment, error) {
	if err := checkName("job", job); err != nil {
		return Assignment{}, err
	}
	kv, err := s.get(ctx, s.assignmentKey(job), fmt.Sprintf("assignment of job %q", job))
	if err != nil {
		return Assignment{}, err
	}
	return Assignment{Value: kv.Value, Revision: kv.ModRevision}, nil
}

// GetSnapshot returns job's committed in-memory snapshot (step and peer
// manifest), or ErrNotFound before the first.
func (s *Store) GetSnapshot(ctx context.Context, job string) (Committed, error) {
	if err := checkName("job", job); err != nil {
		return Committed{}, err
	}
	kv, err := s.get(ctx, s.snapshotKey(job), fmt.Sprintf("committed snapshot of job %q", job))
	if err != nil {
		return Committed{}, err
	}
	return decodeCommitted(job, kv)
}

// GetCommitted returns job's committed step, or ErrNotFound before the
// first commit.
func (s *Store) GetCommitted(ctx context.Context, job string) (Committed, error) {
	if err := checkName("job", job); err != nil {
		return Committed{}, err
	}
	kv, err := s.get(ctx, s.committedKey(job), fmt.Sprintf("committed step of job %q", job))
	if err != nil {
		return Committed{}, err
	}
	return decodeCommitted(job, kv)
}
