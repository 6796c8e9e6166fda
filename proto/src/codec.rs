//! The gRPC codec of both sides: prost's, with smaller per-stream buffers than tonic's.
//!
//! tonic gives every stream an encode and a decode buffer of 8 KiB each, for as long as the
//! stream lives. A control plane holds one discovery stream per connected proxy, and the
//! messages on it are small (a subscription, an ACK, one service's update), so those two
//! buffers were 17 KiB of heap per proxy, mostly never written (heaptrack; see the control
//! plane's `docs/scale.md`). A larger message still goes through whole: the buffer grows
//! to hold it (see [`BufferSettings`]). The encoder also hands its messages to HTTP/2 once
//! they reach 1 KiB rather than tonic's 32 KiB, since the buffer keeps the size of the
//! largest batch it ever held.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// What each stream's encode and decode buffer starts with, and the step its decode
/// buffer grows by: a subscription, an ACK or a small service's update fits.
const BUFFER_SIZE: usize = 1024;
/// How many bytes of ready messages the encoder batches before handing them to HTTP/2.
/// The encode buffer keeps the size of the largest batch for as long as the stream lives,
/// so tonic's 32 KiB let a proxy's first answer (an update per subscription, all ready at
/// once) grow it to 8 KiB for good; at 1 KiB a batch is one or two updates.
const YIELD_THRESHOLD: usize = 1024;

/// The codec the generated clients and servers use (set in `build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct SeamCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SeamCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for SeamCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(buffer_settings())
    }
}
