package store

import (
	"fmt"
	"net"
)

// FreeLoopbackURLs returns n distinct http://127.0.0.1:PORT URLs whose ports
// were free a moment ago. etcd cannot listen on port 0 (the member must know
// its own URLs before it listens, to advertise them), so ports are chosen by
// binding to port 0 and releasing the listener. Another process may take a
// port between the release and etcd's bind; StartEmbedded retries with fresh
// ports when that happens for URLs it chose itself.
func FreeLoopbackURLs(n int) ([]string, error) {
	if n < 1 {
		return nil, fmt.Errorf("free loopback URLs: asked for %d, need at least 1", n)
	}
	// Hold every listener until all are chosen so the n ports are distinct.
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	urls := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free loopback URLs: %w", err)
		}
		ls = append(ls, l)
		urls = append(urls, "http://"+l.Addr().String())
	}
	return urls, nil
}
