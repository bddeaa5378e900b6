//! The v2 `bundle-uri` command (`uploadpack.advertiseBundleURIs`): the `bundle.*`
//! configuration, as git's `bundle-uri.c` sends it, so that the client can fetch bundles
//! before it fetches from us.

use std::io::Write;

use bstr::{BString, ByteSlice};
use packgate_wire::pkt_line::PacketWriter;

use super::{reject, Flow, ServeError, UploadPack};

pub(super) fn handle<W: Write>(
    upload_pack: &UploadPack<'_>,
    arguments: &[BString],
    out: &mut PacketWriter<W>,
) -> Result<Flow, ServeError> {
    if let Some(argument) = arguments.first() {
        return Err(reject(
            out,
            format!("bundle-uri: unexpected argument: '{}'", argument.as_bstr()),
        ));
    }
    for (key, value) in &upload_pack.config.bundle_settings {
        // `key=value`, without a trailing LF, as git writes it.
        let mut line = key.clone();
        line.push(b'=');
        line.extend_from_slice(value);
        out.write_data(&line)?;
    }
    out.flush_pkt()?;
    Ok(Flow::Continue)
}
