package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The join token travels in this metadata key as "Bearer TOKEN", the
// shape of an HTTP Authorization header.
const (
	metadataKey  = "authorization"
	bearerPrefix = "Bearer "
)

// Server is how a gRPC server authenticates its clients. A nil *Server,
// or one with neither field set, serves plaintext to anyone: loopback
// only.
type Server struct {
	// TLS is the server's TLS configuration (ServerTLS); nil serves
	// plaintext.
	TLS *tls.Config
	// Token is the join token every RPC must carry; "" checks nothing.
	Token string
}

// Secure reports whether s encrypts and checks the token: what serving
// beyond loopback requires.
func (s *Server) Secure() bool { return s != nil && s.TLS != nil && s.Token != "" }

// ServerOptions are the grpc.NewServer options that carry s out: TLS
// credentials, and interceptors that check the token on every call.
func (s *Server) ServerOptions() []grpc.ServerOption {
	if s == nil {
		return nil
	}
	var opts []grpc.ServerOption
	if s.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.TLS)))
	}
	if s.Token != "" {
		want := sha256.Sum256([]byte(s.Token))
		opts = append(opts,
			grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				if err := checkToken(ctx, want); err != nil {
					return nil, err
				}
				return h(ctx, req)
			}),
			grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				if err := checkToken(ss.Context(), want); err != nil {
					return err
				}
				return h(srv, ss)
			}))
	}
	return opts
}

// checkToken compares the call's token with the expected one's digest.
// Comparing fixed-size digests in constant time reveals neither the
// token's content nor its length through timing.
func checkToken(ctx context.Context, want [sha256.Size]byte) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(metadataKey)
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, "no join token: this coordinator requires the cluster's join token on every call; pass --token-file (env TERN_TOKEN_FILE) with the token file made by `ternctl certs create`")
	}
	tok, ok := strings.CutPrefix(vals[0], bearerPrefix)
	got := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 || !ok || len(vals) != 1 {
		return status.Error(codes.Unauthenticated, "wrong join token: the token given does not match this coordinator's; pass the --token-file made together with its certificate")
	}
	return nil
}

// Client is how a gRPC client authenticates to the coordinator. A nil
// *Client, or one with neither field set, dials in plaintext without a
// token: loopback only.
type Client struct {
	// TLS is the client's TLS configuration (ClientTLS); nil dials in
	// plaintext.
	TLS *tls.Config
	// Token is the join token sent with every call; "" sends none.
	Token string
}

// DialOptions are the grpc.NewClient options that carry c out: TLS (or
// plaintext) transport credentials and the token as per-RPC credentials.
func (c *Client) DialOptions() []grpc.DialOption {
	if c == nil {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	var opts []grpc.DialOption
	if c.TLS != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(c.TLS)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if c.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds{token: c.Token, tls: c.TLS != nil}))
	}
	return opts
}

// tokenCreds attaches the join token to every call.
type tokenCreds struct {
	token string
	// tls makes gRPC refuse to send the token over a plaintext
	// connection; ClientFlags.Load allows a token without TLS on
	// loopback only.
	tls bool
}

func (c tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{metadataKey: bearerPrefix + c.token}, nil
}

func (c tokenCreds) RequireTransportSecurity() bool { return c.tls }
