// Command backend is the proxy benchmark's upstream: a fasthttp server
// answering every request with a small fixed body naming itself, so the
// benchmark measures the proxies, not the backends.
package main

import (
	"flag"
	"log"

	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18401", "address to serve on")
	name := flag.String("name", "stable", "body to answer with")
	flag.Parse()
	body := []byte(*name + "\n")
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/plain")
			ctx.SetBody(body)
		},
		NoDefaultDate: true,
	}
	log.Fatal(srv.ListenAndServe(*addr))
}
