"""`edge-ids sign` and `edge-ids verify`: who made a bundle, with OpenSSH signatures."""
from __future__ import annotations

from pathlib import Path

import click

from . import exit_codes
from .exit_codes import BadInput, Failed

allowed_signers_option = click.option(
    "--allowed-signers", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE", help="The keys to trust, one `PRINCIPAL namespaces=\"edge-ids-bundle\" KEY` "
                         "line each (ssh-keygen(1), ALLOWED SIGNERS).")
require_signature_option = click.option(
    "--require-signature/--allow-unsigned", default=None,
    help="With --allowed-signers an unsigned bundle is refused anyway; --allow-unsigned is the "
         "explicit opt-out that lets unsigned bundles load on a device with trusted keys (a "
         "signed one is still checked). --require-signature needs --allowed-signers.")


@click.command(epilog=exit_codes.epilog())
@click.option("--key", required=True, type=click.Path(exists=True, dir_okay=False,
                                                      path_type=Path),
              help="Your OpenSSH private key (or its .pub, with the private key in ssh-agent). "
                   "ssh-keygen asks for its passphrase if it has one.")
@click.option("--principal", default="release-signer", show_default=True,
              help="The name printed in the allowed-signers line to give the devices.")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
def sign(key, principal, bundle):
    """Sign a bundle (directory or .tar.gz) with an OpenSSH key.

    The signature covers manifest.json, which holds the SHA-256 of every other file, so it
    covers the whole bundle; it is stored in the bundle as manifest.json.sig (made by
    `ssh-keygen -Y sign -n edge-ids-bundle`). A signature already there is replaced.
    Devices check it before every load against their allowed-signers file.

    \b
    Example:
      ssh-keygen -t ed25519 -f ~/.ssh/edge-ids-release -C "releases@example.org"
      edge-ids sign --key ~/.ssh/edge-ids-release out/nsl-kdd/bundle
    """
    from .edge_runtime.model.bundle import BundleError
    from .edge_runtime.model.signature import SignatureError
    from .signing import allowed_signers_line, sign_bundle

    try:
        signer = sign_bundle(bundle, key)
    except BundleError as e:
        raise BadInput(str(e)) from None
    except (SignatureError, OSError) as e:  # ssh-keygen refused the key, or the disk
        raise Failed(str(e)) from None
    click.echo(f"signed {bundle} with {signer.key}")
    line = allowed_signers_line(key, principal)
    if line:
        click.echo(f"Trust it on the devices with this line in their allowed-signers file "
                   f"(edge-ids deploy --allowed-signers FILE):\n{line}")


@click.command(epilog=exit_codes.epilog())
@allowed_signers_option
@require_signature_option
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
def verify(allowed_signers, require_signature, bundle):
    """Check a bundle as a device with these settings would, before deploying it.

    Exits 0 and says who signed it when the device would load it; otherwise 5 with the reason
    (unsigned where keys are trusted, a key not in the allowed-signers file, changed after
    signing, bad hashes).
    """
    from .edge_runtime.model.bundle import BundleError, load_bundle
    from .edge_runtime.model.signature import TrustPolicy

    if require_signature and allowed_signers is None:
        raise click.UsageError("--require-signature needs --allowed-signers FILE")
    try:
        loaded = load_bundle(bundle, TrustPolicy(allowed_signers, require_signature is False))
    except BundleError as e:
        raise BadInput(str(e)) from None
    click.echo(f"{bundle}: {loaded.detector} model {loaded.model_sha256[:12]}, "
               + (f"signed by {loaded.signer}" if loaded.signer else "not signed"))


@click.command(name="rotate-keys", epilog=exit_codes.epilog())
@click.option("--key", required=True, type=click.Path(exists=True, dir_okay=False,
                                                      path_type=Path),
              help="A private key the devices trust now (a line of their trust anchor), or its "
                   ".pub with the private key in ssh-agent.")
@click.option("--trusted", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="The keys the devices trust now: check that they would "
                                   "accept the signature before writing anything.")
@click.argument("new", metavar="NEW_ALLOWED_SIGNERS",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def rotate_keys(key, trusted, new):
    """Sign a new list of trusted keys, so that devices accept it from a release.

    A device keeps the keys it trusts in PREFIX/trust/allowed_signers, outside the releases;
    a deploy that brings another list is refused unless the list is signed by a key of that
    anchor. This puts a serial line (`# edge-ids trust serial`, the UTC time) on top of
    NEW_ALLOWED_SIGNERS and writes NEW_ALLOWED_SIGNERS.sig beside it; `deploy
    --allowed-signers NEW_ALLOWED_SIGNERS` (or the fleet's edge_ids_allowed_signers) carries
    both. A device takes a list only if its serial is newer than its own, so an older signed
    list cannot be replayed to bring a revoked key back.

    \b
    Example: revoke a stolen key (the new list without it, signed by a key
    the devices still trust; docs/fleet.md, "Revoking a key"):
      edge-ids rotate-keys --key ~/.ssh/edge-ids-backup \\
          --trusted keys/allowed_signers.old keys/allowed_signers
    """
    from .edge_runtime.model.signature import SignatureError
    from .signing import sign_key_list

    try:
        serial, signer = sign_key_list(new, key, trusted)
    except ValueError as e:
        raise BadInput(str(e)) from None
    except (SignatureError, OSError) as e:  # ssh-keygen refused the key, or the disk
        raise Failed(str(e)) from None
    click.echo(f"{new}: serial {serial}, signed by {signer}; {new}.sig written beside it. "
               f"Deploy it with --allowed-signers {new}.")
