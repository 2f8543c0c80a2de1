
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::exit_code;

    #[test]
    fn each_drain_wait_that_runs_out_has_its_own_exit_status() {
        let unconfirmed = anyhow::Error::from(DrainWaitError::WithdrawUnconfirmed(
            Duration::from_secs(10),
            "10.0.0.100 not confirmed gone from BIRD".into(),
        ));
        assert_eq!(exit_code(&unconfirmed), EXIT_WITHDRAW_UNCONFIRMED);
        assert_eq!(
            unconfirmed.to_string(),
            "drained, but the withdrawal was not seen within 10s: 10.0.0.100 not confirmed \
             gone from BIRD"
        );
        let flows = anyhow::Error::from(DrainWaitError::FlowsContinue(
            Duration::from_secs(60),
            2.5,
        ));
        assert_eq!(exit_code(&flows), EXIT_FLOWS_CONTINUE);
        assert_eq!(
            flows.to_string(),
            "drained and withdrawn, but new flows still arrive after 60s: 2.5/s"
        );
    }
}
