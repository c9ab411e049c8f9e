//! The device training runs on (`training.device`) and candle's errors as ours.

use candle_core::Device;
use trialflow_core::config::{Config, DeviceChoice};
use trialflow_core::{Error, Result};

pub(crate) fn device(cfg: &Config) -> Result<Device> {
    match cfg.training.device {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto if cfg!(feature = "cuda") => {
            Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu))
        }
        DeviceChoice::Auto => Ok(Device::Cpu),
        DeviceChoice::Cuda if cfg!(feature = "cuda") => {
            Device::new_cuda(0).map_err(|e| Error::infra("cuda:0", format!("no usable GPU: {e}")))
        }
        DeviceChoice::Cuda => Err(Error::config(
            &cfg.source_file,
            "training.device",
            "`cuda` needs a binary built with `--features cuda`; this one is CPU-only",
        )),
    }
}

pub(crate) fn ce(e: candle_core::Error) -> Error {
    Error::Internal(format!("candle: {e}"))
}
