package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/iotwatch/iotwatch/pipeline/formats"
)

// keyhashCmd prints the hash the pipeline stores for API keys in clear: an
// analyst's way from a known key to its device and decisions in ClickHouse.
func keyhashCmd(_ context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("keyhash", flag.ContinueOnError)
	fs.SetOutput(stdout)
	secret := fs.String("key-secret-file", "", "the pipeline's --key-secret-file (required)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch keyhash --key-secret-file FILE KEY...

Prints, one per line, the hash that stands for each API key in iotwatch's
events, alerts and decisions (HMAC-SHA256 keyed by the pipeline's
--key-secret-file, 16 hex digits): the device id of a device identified by its
key, and the value of an api_key block. For example:

  h=$(iotwatch keyhash --key-secret-file /etc/iotwatch/key.secret "$KEY")
  clickhouse-client -q "SELECT * FROM iotwatch.decisions FINAL WHERE value = '$h' OR device = '$h'"

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *secret == "" {
		return usageError{fmt.Errorf("cannot hash keys: --key-secret-file is required")}
	}
	if fs.NArg() == 0 {
		return usageError{fmt.Errorf("cannot hash keys: no KEY given")}
	}
	for _, k := range fs.Args() {
		h, err := keyHash(*secret, k)
		if err != nil {
			return usageError{fmt.Errorf("cannot use --key-secret-file: %w", err)}
		}
		fmt.Fprintln(stdout, h)
	}
	return nil
}

// keyHash hashes an API key in clear as the pipeline's decoders do with the
// secret in secretFile.
func keyHash(secretFile, key string) (string, error) {
	secret, err := readKeySecret(secretFile)
	if err != nil {
		return "", err
	}
	return formats.KeyHasher(secret)(key), nil
}
