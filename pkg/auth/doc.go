// Package auth secures tern's control plane: the gRPC connections between
// ternctl, the workers and the coordinator.
//
// Two things guard a coordinator that other machines can reach:
//
//   - TLS. The coordinator presents a server certificate signed by the
//     cluster's own CA; workers and ternctl verify it (and the host name they
//     dialled) against that CA, so nobody in the middle can read the job
//     tokens and specs that travel on the session, or pose as the
//     coordinator.
//   - A join token, a random secret shared by the cluster. Every RPC carries
//     it as gRPC metadata (per-RPC credentials); the coordinator checks it
//     on every call in constant time and answers UNAUTHENTICATED when it is
//     missing or wrong, so only holders of the token can submit jobs or
//     register as workers.
//
// CreateBundle (`ternctl certs create`) writes all of it to a directory:
// the CA, the coordinator's certificate and key for the host names and
// addresses it is reached by, and the token (mode 0600).
//
// On loopback both are optional, and a local cluster runs as before
// without either. Anywhere else they are required: ServerFlags.Load and
// ClientFlags.Load refuse a non-loopback address without them, naming the
// flags that are missing and the command that creates them.
//
//	var sf auth.ServerFlags
//	sf.Register(fs)               // --tls-cert --tls-key --token-file
//	srv, err := sf.Load(listen)   // nil on loopback without flags
//	grpc.NewServer(srv.ServerOptions()...)
//
//	var cf auth.ClientFlags
//	cf.Register(fs)               // --tls-ca --token-file
//	cli, err := cf.Load(target)
//	grpc.NewClient(target, cli.DialOptions()...)
//
// This package secures the control plane only. The ranks of a job
// authenticate to each other with the attempt's own token and TLS derived
// from it (pkg/comm); the coordinator hands that token out over the session
// this package protects.
package auth
