//! The PCM stream state machine as the guest drives it through control requests.
//!
//! The spec's machine is strict; the transitions Linux actually makes (pre-filled
//! playback, repeated SET_PARAMS/PREPARE, STOP/START pauses, STOP→RELEASE→PREPARE→START
//! xrun recovery, SET_PARAMS+PREPARE on resume) are all accepted, and only the requests
//! that make no sense for the current state are refused.

/// Where a stream is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcmState {
    /// No parameters yet (after reset or connection).
    Idle,
    /// SET_PARAMS accepted.
    ParamsSet,
    /// PREPARE accepted: I/O may be queued, nothing is consumed yet.
    Prepared,
    /// START accepted: the device consumes or produces periods in real time.
    Running,
    /// STOP accepted: queued I/O is kept for a later START.
    Stopped,
    /// RELEASE accepted: parameters are kept, I/O is refused until PREPARE.
    Released,
}

/// A control request that changes a stream's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcmRequest {
    /// PCM_SET_PARAMS: format, rate, channels, buffer and period sizes.
    SetParams,
    /// PCM_PREPARE: ready to run, the stream position back at zero.
    Prepare,
    /// PCM_START: periods are completed from now on.
    Start,
    /// PCM_STOP: paused, queued I/O kept.
    Stop,
    /// PCM_RELEASE: queued I/O returned, the stream no longer used.
    Release,
}

/// What accepting a request means for the I/O the guest has queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Keep queued I/O as it is.
    Keep,
    /// Return every queued I/O message to the guest before answering.
    ReturnPending,
}

impl PcmState {
    /// The state after `req`, or `None` if the request is refused (BAD_MSG).
    pub fn apply(self, req: PcmRequest) -> Option<(PcmState, Transition)> {
        use PcmRequest::*;
        use PcmState::*;
        use Transition::*;
        match (self, req) {
            (Running, SetParams | Prepare | Release) => None,
            (_, SetParams) => Some((ParamsSet, ReturnPending)),
            (Idle, Prepare) => None,
            // A fresh PREPARE restarts the stream position, so old I/O goes back.
            (_, Prepare) => Some((Prepared, ReturnPending)),
            (Prepared | Stopped, Start) => Some((Running, Keep)),
            (_, Start) => None,
            (Running, Stop) => Some((Stopped, Keep)),
            (_, Stop) => None,
            // Linux releases a stream it left stopped when it reopens it, whatever state
            // it is in; returning I/O is always safe.
            (_, Release) => Some((Released, ReturnPending)),
        }
    }

    /// Whether the guest may queue I/O on the stream.
    pub fn accepts_io(self) -> bool {
        matches!(
            self,
            PcmState::Prepared | PcmState::Running | PcmState::Stopped
        )
    }

    /// The state's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            PcmState::Idle => "idle",
            PcmState::ParamsSet => "params-set",
            PcmState::Prepared => "prepared",
            PcmState::Running => "running",
            PcmState::Stopped => "stopped",
            PcmState::Released => "released",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PcmRequest::*;
    use super::PcmState::*;
    use super::*;

    fn run(seq: &[PcmRequest]) -> Option<PcmState> {
        seq.iter()
            .try_fold(Idle, |s, r| s.apply(*r).map(|(next, _)| next))
    }

    #[test]
    fn alsa_sequences_are_accepted() {
        // open, play, close
        assert_eq!(
            run(&[SetParams, Prepare, Start, Stop, Release]),
            Some(Released)
        );
        // repeated hw_params / prepare
        assert_eq!(
            run(&[SetParams, SetParams, Prepare, Prepare, Start]),
            Some(Running)
        );
        // pause and resume
        assert_eq!(
            run(&[SetParams, Prepare, Start, Stop, Start, Stop, Start]),
            Some(Running)
        );
        // xrun recovery
        assert_eq!(
            run(&[SetParams, Prepare, Start, Stop, Release, Prepare, Start]),
            Some(Running)
        );
        // resume from suspend re-sends the parameters
        assert_eq!(
            run(&[SetParams, Prepare, Start, Stop, SetParams, Prepare, Start]),
            Some(Running)
        );
        // reopen of a stream left stopped
        assert_eq!(run(&[Release, SetParams, Prepare]), Some(Prepared));
    }

    #[test]
    fn nonsense_is_refused() {
        assert_eq!(Idle.apply(Start), None);
        assert_eq!(Idle.apply(Prepare), None);
        assert_eq!(ParamsSet.apply(Start), None);
        assert_eq!(Running.apply(SetParams), None);
        assert_eq!(Running.apply(Prepare), None);
        assert_eq!(Running.apply(Release), None);
        assert_eq!(Running.apply(Start), None);
        assert_eq!(Prepared.apply(Stop), None);
        assert_eq!(Released.apply(Start), None);
    }

    #[test]
    fn pending_io_is_returned_when_position_resets() {
        assert_eq!(
            Stopped.apply(Release),
            Some((Released, Transition::ReturnPending))
        );
        assert_eq!(
            Stopped.apply(Prepare),
            Some((Prepared, Transition::ReturnPending))
        );
        assert_eq!(Running.apply(Stop), Some((Stopped, Transition::Keep)));
        assert!(Prepared.accepts_io() && Stopped.accepts_io() && Running.accepts_io());
        assert!(!Released.accepts_io() && !Idle.accepts_io() && !ParamsSet.accepts_io());
    }
}
