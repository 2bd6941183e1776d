#!/usr/bin/env bash
# Interop with stock tools, both ways:
#  1. a manifest signed by `ferry` verifies with the `jose` CLI, given the
#     signer's public key as a JWK that openssl extracted from the certificate;
#  2. a command signed by the `jose` CLI, with an x5c header holding a
#     certificate that `openssl` issued, is accepted by `ferry cmd verify`;
#  3. a content key that `ferry cmd sign --wrap-key-for` wrapped for a
#     gateway's key-agreement certificate unwraps with `jose jwe dec`, given
#     that gateway's key as a JWK that openssl extracted, and not with
#     another key.
# ferry's own code never produces the keys or certificates it is checked with
# here, so a bug shared by signer and verifier cannot hide.
set -euo pipefail
FERRY=${1:?usage: jose_cli.sh PATH/TO/ferry}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# base64url without padding, from binary on stdin
b64url() { basenc --base64url -w0 | tr -d '='; }
# hex from "openssl ec -text" blocks named $2 (priv: or pub:) in file $1
hexblock() { sed -n "/^$2/,/^[^ ]/p" "$1" | grep '^ ' | tr -d ' :\n'; }

"$FERRY" pki init "$T/pki" --gateway gw-1 >/dev/null

# --- 1. ferry signs a manifest, jose verifies it
head -c 3000 /dev/urandom > "$T/app.bin"
cat > "$T/spec.yaml" <<YAML
sequence: 1
components:
  - name: app
    type: application
    adapter: self
    target: {vendor_id: acme, class_id: gw}
    version: 1.0.0
    format: file
    file: app.bin
YAML
"$FERRY" manifest sign "$T/spec.yaml" --key "$T/pki/manifest-signer.key" \
	--cert "$T/pki/manifest-signer.pem" -o "$T/m.jws" >/dev/null

openssl x509 -in "$T/pki/manifest-signer.pem" -pubkey -noout > "$T/pub.pem"
openssl ec -pubin -in "$T/pub.pem" -text -noout 2>/dev/null > "$T/pub.txt"
pub=$(hexblock "$T/pub.txt" pub:)
[ ${#pub} -eq 130 ] || fail "unexpected public key length ${#pub}"
x=$(echo -n "${pub:2:64}" | tr a-f A-F | basenc --base16 -d | b64url)
y=$(echo -n "${pub:66:64}" | tr a-f A-F | basenc --base16 -d | b64url)
printf '{"kty":"EC","crv":"P-256","x":"%s","y":"%s","alg":"ES256"}' "$x" "$y" > "$T/pub.jwk"

jose jws ver -i "$T/m.jws" -k "$T/pub.jwk" -O "$T/m.payload" || fail "jose rejects ferry's manifest"
grep -q '"sequence":1' "$T/m.payload" || fail "jose's payload is not the manifest"
sha=$(sha256sum "$T/app.bin" | cut -d' ' -f1)
grep -q "\"sha256\":\"$sha\"" "$T/m.payload" || fail "manifest digest differs from sha256sum"
# The oracle must be able to say no: a changed payload does not verify.
IFS=. read -r h p s < "$T/m.jws" || true
p2=$(echo -n '{"sequence":2}' | b64url)
if echo -n "$h.$p2.$s" | jose jws ver -i - -k "$T/pub.jwk" 2>/dev/null; then
	fail "jose accepted a tampered manifest"
fi
echo "ok: ferry-signed manifest verifies with jose jws ver"

# --- 2. openssl issues a signer, jose signs a command, ferry verifies it
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/op.key" 2>/dev/null
openssl req -new -key "$T/op.key" -subj "/CN=openssl signer" -out "$T/op.csr"
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' > "$T/ext.cnf"
openssl x509 -req -in "$T/op.csr" -CA "$T/pki/ca.pem" -CAkey "$T/pki/ca.key" -CAcreateserial \
	-days 2 -sha256 -extfile "$T/ext.cnf" -out "$T/op.pem" 2>/dev/null
openssl ec -in "$T/op.key" -text -noout 2>/dev/null > "$T/op.txt"
priv=$(hexblock "$T/op.txt" priv:)
pub=$(hexblock "$T/op.txt" pub:)
priv=${priv: -64}
d=$(echo -n "$priv" | tr a-f A-F | basenc --base16 -d | b64url)
x=$(echo -n "${pub:2:64}" | tr a-f A-F | basenc --base16 -d | b64url)
y=$(echo -n "${pub:66:64}" | tr a-f A-F | basenc --base16 -d | b64url)
printf '{"kty":"EC","crv":"P-256","x":"%s","y":"%s","d":"%s","alg":"ES256"}' "$x" "$y" "$d" > "$T/op.jwk"
x5c=$(openssl x509 -in "$T/op.pem" -outform DER | base64 -w0)

now=$(date +%s)
printf '{"iss":"acme","sub":"gw-1","jti":"interop-%s","iat":%s,"nbf":%s,"exp":%s,"op":"update.cancel","update_id":"u-1"}' \
	"$now" "$now" "$now" $((now + 600)) > "$T/cmd.json"
jose jws sig -I "$T/cmd.json" -k "$T/op.jwk" -c -o "$T/cmd.jws" \
	-s "{\"protected\":{\"alg\":\"ES256\",\"x5c\":[\"$x5c\"]}}"

"$FERRY" cmd verify "$T/cmd.jws" --ca "$T/pki/ca.pem" --gateway gw-1 > "$T/cmd.out" ||
	fail "ferry rejects a jose-signed command"
grep -q '"op": "update.cancel"' "$T/cmd.out" || fail "ferry printed another payload"
# And it still refuses what it must: another gateway, another CA.
rc=0; "$FERRY" cmd verify "$T/cmd.jws" --ca "$T/pki/ca.pem" --gateway gw-2 2> "$T/err" || rc=$?
[ $rc -eq 1 ] && grep -q wrong_gateway "$T/err" || fail "command for gw-1 accepted by gw-2 (rc=$rc)"
"$FERRY" pki init "$T/other" >/dev/null
rc=0; "$FERRY" cmd verify "$T/cmd.jws" --ca "$T/other/ca.pem" --gateway gw-1 2> "$T/err" || rc=$?
[ $rc -eq 1 ] && grep -q untrusted_signer "$T/err" || fail "command accepted under another CA (rc=$rc)"
echo "ok: jose-signed command with an openssl certificate verifies with ferry"

# --- 3. ferry wraps a content key, jose unwraps it
"$FERRY" manifest sign "$T/spec.yaml" --encrypt --key "$T/pki/manifest-signer.key" \
	--cert "$T/pki/manifest-signer.pem" -o "$T/e.jws" >/dev/null
"$FERRY" cmd sign --op update.deploy --gateway gw-1 --update u-e --manifest "$T/e.jws" \
	--link app=https://127.0.0.1/app.bin.fenc --keys "$T/e.jws.keys" --wrap-key-for "$T/pki/kek-gw-1.pem" \
	--key "$T/pki/cmd-signer.key" --cert "$T/pki/cmd-signer.pem" > "$T/e-cmd.jws"
"$FERRY" cmd verify "$T/e-cmd.jws" --ca "$T/pki/ca.pem" --gateway gw-1 > "$T/e-cmd.out"
jwe=$(grep -o '"app": "eyJ[^"]*"' "$T/e-cmd.out" | cut -d'"' -f4)
[ -n "$jwe" ] || fail "the command carries no wrapped key for app"
echo -n "$jwe" > "$T/app.jwe"
# jwk_of KEY OUT: the P-256 private key in KEY as a JWK, by openssl
jwk_of() {
	openssl ec -in "$1" -text -noout 2>/dev/null > "$T/k.txt"
	local pr pu
	pr=$(hexblock "$T/k.txt" priv:)
	pr=$(printf '%064s' "${pr: -64}" | tr ' ' 0)
	pu=$(hexblock "$T/k.txt" pub:)
	printf '{"kty":"EC","crv":"P-256","x":"%s","y":"%s","d":"%s"}' \
		"$(echo -n "${pu:2:64}" | tr a-f A-F | basenc --base16 -d | b64url)" \
		"$(echo -n "${pu:66:64}" | tr a-f A-F | basenc --base16 -d | b64url)" \
		"$(echo -n "$pr" | tr a-f A-F | basenc --base16 -d | b64url)" > "$2"
}
jwk_of "$T/pki/kek-gw-1.key" "$T/kek.jwk"
jose jwe dec -i "$T/app.jwe" -k "$T/kek.jwk" -O "$T/key.bin" || fail "jose cannot unwrap ferry's wrapped key"
got=$(b64url < "$T/key.bin")
grep -q "\"app\":\"$got\"" "$T/e.jws.keys" || fail "jose unwrapped another key than manifest sign made"
h=$(cut -d. -f1 "$T/app.jwe")
while [ $((${#h} % 4)) -ne 0 ]; do h="$h="; done
echo -n "$h" | basenc --base64url -d | grep -q '"alg":"ECDH-ES+A256KW"' ||
	fail "the JWE header does not name ECDH-ES+A256KW"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/other.key" 2>/dev/null
jwk_of "$T/other.key" "$T/other.jwk"
if jose jwe dec -i "$T/app.jwe" -k "$T/other.jwk" -O "$T/key2.bin" 2>/dev/null; then
	fail "jose unwrapped the key with another gateway's key"
fi
echo "ok: a content key ferry wrapped for a gateway unwraps with jose jwe dec, and only with its key"
