from otp_service.cli import main

raise SystemExit(main())
