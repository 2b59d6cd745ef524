// Package integration tests tern's control plane as separate processes:
// the coordinator and worker binaries built from cmd/, and etcd members
// each in a process of its own (the test binary started again in a member
// role), stopped with SIGKILL at chosen points. The package has no code
// outside its tests.
//
// Its tests build the binaries once per run, into a temporary directory,
// with the go command that runs them.
package integration
