// Package store keeps the coordinator's durable state in etcd.
//
// StartEmbedded runs a single etcd member inside the coordinator with its
// data in the coordinator's data directory, on free loopback ports: etcd
// cannot listen on port 0 (a member must know the URLs it advertises before
// it listens), so ports are chosen by binding port 0 and releasing it, and
// chosen again if another process takes one first. A reopened directory
// first tries the URLs it used last time. The member logs to DIR/etcd.log
// unless told otherwise. EmbedOptions.InitialCluster starts a member of a
// multi-member cluster instead.
package store
