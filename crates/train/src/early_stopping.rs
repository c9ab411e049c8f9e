//! Early stopping on the validation loss (or AUC): patience, and which epoch's weights to keep.

use crate::Epoch;

/// Tracks the best epoch and decides when to stop: the one early-stopping rule of both training paths.
pub(crate) struct EarlyStopping {
    /// (score to minimize: val loss, or −AUC; epoch; val loss at that epoch)
    pub(crate) best: (f64, usize, f64),
    pub(crate) patience: usize,
    pub(crate) monitor_auc: bool,
}

pub(crate) enum Verdict {
    Improved,
    Continue,
    Stop,
}

impl EarlyStopping {
    pub(crate) fn observe(&mut self, e: &Epoch) -> Verdict {
        let score = if self.monitor_auc {
            -e.val_auc.unwrap_or(f64::NAN)
        } else {
            e.val_loss
        };
        if score < self.best.0 - 1e-6 {
            self.best = (score, e.epoch, e.val_loss);
            Verdict::Improved
        } else if e.epoch - self.best.1 >= self.patience {
            Verdict::Stop
        } else {
            Verdict::Continue
        }
    }
}
