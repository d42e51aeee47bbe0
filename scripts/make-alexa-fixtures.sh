#!/usr/bin/env bash
# Makes the certificate chain the Alexa tests sign requests with: a root CA of our own, an
# intermediate, and a leaf for echo-api.amazon.com (as Amazon's is), plus a leaf for another name.
# The tests trust only this root. Run once; the output is committed (valid until 2125).
#
#   scripts/make-alexa-fixtures.sh crates/crossline-channels/tests/fixtures/alexa
set -euo pipefail
out=$(realpath -m "${1:?usage: $0 OUTPUT_DIR}")
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
days=36500

openssl req -x509 -newkey rsa:2048 -nodes -keyout root.key -out root.pem -days $days -sha256 \
  -subj "/CN=Crossline Test Root CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey rsa:2048 -nodes -keyout intermediate.key -out intermediate.csr -subj "/CN=Crossline Test Intermediate CA"
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' >ca.ext
openssl x509 -req -in intermediate.csr -CA root.pem -CAkey root.key -CAcreateserial -out intermediate.pem -days $days \
  -sha256 -extfile ca.ext

leaf() { # name, SAN
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:%s\n' "$2" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA intermediate.pem -CAkey intermediate.key -CAcreateserial -out "$1.pem" \
    -days $days -sha256 -extfile "$1.ext"
  cat "$1.pem" intermediate.pem >"$out/$1-chain.pem"
  openssl pkcs8 -topk8 -nocrypt -in "$1.key" -outform DER -out "$out/$1.pk8"
}
leaf echo-api echo-api.amazon.com
leaf other-name not-echo-api.example.com
cp root.pem "$out/root.pem"
echo "wrote $out: root.pem, echo-api-chain.pem, echo-api.pk8, other-name-chain.pem, other-name.pk8"
