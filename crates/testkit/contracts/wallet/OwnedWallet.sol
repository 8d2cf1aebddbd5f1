// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// A contract account for the tests of hb402: it holds tokens and accepts (EIP-1271) what its
/// owner, an EOA, signs. Payments from it are checked on chain, as a smart wallet's are.
///
/// Its owner can make it misbehave, as a hostile payer's wallet would (`setMode`):
/// 0 honest; 1 refuses every signature; 2 spends all but 60000 of the gas it is given, then
/// answers honestly; 3 answers honestly to calls and simulations (gas price 0) and reverts in
/// mined transactions; 4 refuses calls that have a sender (`tx.origin`), answers the others.
contract OwnedWallet is IERC1271 {
    address public immutable owner;
    uint8 public mode;

    constructor(address owner_) {
        owner = owner_;
    }

    function setMode(uint8 mode_) external {
        require(msg.sender == owner, "owner only");
        mode = mode_;
    }

    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (mode == 1) {
            return 0xffffffff;
        }
        if (mode == 2) {
            while (gasleft() > 60000) {}
        }
        if (mode == 3 && tx.gasprice > 0) {
            revert("refused once mined");
        }
        if (mode == 4 && tx.origin != address(0)) {
            return 0xffffffff;
        }
        (address signer, ECDSA.RecoverError error,) = ECDSA.tryRecover(hash, signature);
        if (error == ECDSA.RecoverError.NoError && signer == owner) {
            return IERC1271.isValidSignature.selector;
        }
        return 0xffffffff;
    }
}
