// Command etcd is the etcd server at the version kube-apiserver v1.36 is tested with, built from
// go.etcd.io/etcd/server/v3 so that the control plane for spendmeter's tests needs no download of binaries.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
